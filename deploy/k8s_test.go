package deploy_test

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// obj is one decoded Kubernetes object.
type obj map[string]any

// get walks a path of map keys and list indexes ("spec", "template", 0, ...).
func (o obj) get(path ...any) any {
	var cur any = map[string]any(o)
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := cur.(map[string]any)
			if !ok {
				return nil
			}
			cur = m[k]
		case int:
			l, ok := cur.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			cur = l[k]
		}
	}
	return cur
}

func (o obj) str(path ...any) string {
	s, _ := o.get(path...).(string)
	return s
}

func (o obj) list(path ...any) []any {
	l, _ := o.get(path...).([]any)
	return l
}

func (o obj) m(path ...any) map[string]any {
	m, _ := o.get(path...).(map[string]any)
	return m
}

func (o obj) id() string { return o.str("kind") + "/" + o.str("metadata", "name") }

// loadManifests decodes every document of the kustomization's resources.
func loadManifests(t testing.TB) []obj {
	t.Helper()
	kb, err := os.ReadFile(filepath.Join("k8s", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `yaml:"resources"`
	}
	if err := yaml.Unmarshal(kb, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join("k8s", "*.yaml"))
	var listed []string
	for _, r := range k.Resources {
		listed = append(listed, filepath.Join("k8s", r))
	}
	for _, f := range files {
		if filepath.Base(f) != "kustomization.yaml" && !slices.Contains(listed, f) {
			t.Errorf("%s is not listed in kustomization.yaml", f)
		}
	}
	var objs []obj
	for _, f := range listed {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(fh)
		for {
			// Decode into a plain map: into obj, nested maps would be objs too.
			var raw map[string]any
			err := dec.Decode(&raw)
			o := obj(raw)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o == nil {
				continue
			}
			if o.str("apiVersion") == "" || o.str("kind") == "" || o.str("metadata", "name") == "" {
				t.Errorf("%s: object without apiVersion, kind or metadata.name: %v", f, o)
			}
			objs = append(objs, o)
		}
		fh.Close()
	}
	return objs
}

// find returns the object kind/name or fails.
func find(t testing.TB, objs []obj, kind, name string) obj {
	t.Helper()
	for _, o := range objs {
		if o.str("kind") == kind && o.str("metadata", "name") == name {
			return o
		}
	}
	t.Fatalf("no %s/%s in deploy/k8s", kind, name)
	return nil
}

// subset reports whether every key of sel has the same value in labels.
func subset(sel, labels map[string]any) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// envRef matches Kubernetes' $(VAR) expansion in args.
var envRef = regexp.MustCompile(`\$\(([A-Z_][A-Z0-9_]*)\)`)

// TestKubernetesManifests checks the manifests' wiring (selectors, services,
// ports, probes, volumes, lookupd addresses), their security settings, and
// runs every container's command line through the real binary's flag parser.
func TestKubernetesManifests(t *testing.T) {
	objs := loadManifests(t)
	seen := map[string]bool{}
	for _, o := range objs {
		if seen[o.id()] {
			t.Errorf("duplicate %s", o.id())
		}
		seen[o.id()] = true
	}

	nsqd := find(t, objs, "StatefulSet", "nsqd")
	lookupd := find(t, objs, "StatefulSet", "nsqlookupd")
	admin := find(t, objs, "Deployment", "nsqadmin")
	workloads := []obj{nsqd, lookupd, admin}
	binaries := map[string]string{"nsqd": "nsqd", "nsqlookupd": "nsqlookupd", "nsqadmin": "nsqadmin"}

	// containerPorts of a workload: name -> port.
	containerPorts := func(w obj) map[string]int {
		ports := map[string]int{}
		for _, c := range w.list("spec", "template", "spec", "containers") {
			for _, p := range obj(c.(map[string]any)).list("ports") {
				po := obj(p.(map[string]any))
				ports[po.str("name")] = po.get("containerPort").(int)
			}
		}
		return ports
	}
	argsOf := func(w obj) []string {
		var out []string
		for _, a := range w.list("spec", "template", "spec", "containers", 0, "args") {
			out = append(out, a.(string))
		}
		return out
	}

	for _, w := range workloads {
		name := w.str("metadata", "name")
		tmplLabels := w.m("spec", "template", "metadata", "labels")
		if !subset(w.m("spec", "selector", "matchLabels"), tmplLabels) {
			t.Errorf("%s: selector %v does not match template labels %v", w.id(), w.m("spec", "selector", "matchLabels"), tmplLabels)
		}
		psc := obj(w.m("spec", "template", "spec", "securityContext"))
		if psc.get("runAsNonRoot") != true || psc.str("seccompProfile", "type") != "RuntimeDefault" {
			t.Errorf("%s: pod securityContext %v, want runAsNonRoot and the RuntimeDefault seccomp profile", w.id(), psc)
		}
		containers := w.list("spec", "template", "spec", "containers")
		if len(containers) != 1 {
			t.Fatalf("%s: want one container, got %d", w.id(), len(containers))
		}
		c := obj(containers[0].(map[string]any))
		if c.str("image") != "sluice:latest" {
			t.Errorf("%s: image %q, want sluice:latest (kustomization.yaml rewrites it)", w.id(), c.str("image"))
		}
		csc := obj(c.m("securityContext"))
		if csc.get("allowPrivilegeEscalation") != false || csc.get("readOnlyRootFilesystem") != true ||
			!slices.Contains(csc.list("capabilities", "drop"), any("ALL")) {
			t.Errorf("%s: container securityContext %v", w.id(), csc)
		}
		if c.m("resources", "requests") == nil || c.get("resources", "limits", "memory") == nil {
			t.Errorf("%s: want resource requests and a memory limit", w.id())
		}
		ports := containerPorts(w)
		for _, probe := range []string{"readinessProbe", "livenessProbe"} {
			if c.str(probe, "httpGet", "path") != "/ping" {
				t.Errorf("%s: %s path %q, want /ping", w.id(), probe, c.str(probe, "httpGet", "path"))
			}
			if _, ok := ports[c.str(probe, "httpGet", "port")]; !ok || c.str(probe, "httpGet", "port") != "http" {
				t.Errorf("%s: %s port %v is not the container's http port", w.id(), probe, c.get(probe, "httpGet", "port"))
			}
		}
		// The container command line must parse with the real binary; with
		// --version appended it exits right after parsing, printing the version.
		cmd := c.list("command")
		if len(cmd) != 1 {
			t.Fatalf("%s: command %v, want the binary's path", w.id(), cmd)
		}
		if cmd[0] != "/usr/local/bin/"+binaries[name] {
			t.Errorf("%s: command %v, want /usr/local/bin/%s", w.id(), cmd, binaries[name])
		}
		envs := map[string]bool{}
		for _, e := range c.list("env") {
			envs[obj(e.(map[string]any)).str("name")] = true
		}
		var args []string
		for _, a := range argsOf(w) {
			for _, m := range envRef.FindAllStringSubmatch(a, -1) {
				if !envs[m[1]] {
					t.Errorf("%s: arg %q uses $(%s), which the container does not define", w.id(), a, m[1])
				}
			}
			args = append(args, envRef.ReplaceAllString(a, "x"))
		}
		out, err := runBinary(binaries[name], append(args, "--version")...)
		if err != nil || !strings.HasPrefix(out, binaries[name]+" v") {
			lines := strings.SplitN(out, "\n", 3)
			t.Errorf("%s: %s %q --version: %v\n%s", w.id(), binaries[name], args, err, strings.Join(lines[:min(2, len(lines))], "\n"))
		}
		// Listen addresses match the declared container ports.
		for _, a := range args {
			for flagName, portName := range map[string]string{"--tcp-address=": "tcp", "--http-address=": "http"} {
				if v, ok := strings.CutPrefix(a, flagName); ok {
					if want := fmt.Sprintf("0.0.0.0:%d", ports[portName]); v != want {
						t.Errorf("%s: %s%s, but container port %s is %d", w.id(), flagName, v, portName, ports[portName])
					}
				}
			}
		}
	}

	// Every Service selects exactly one workload and targets its named ports.
	for _, s := range objs {
		if s.str("kind") != "Service" {
			continue
		}
		var target obj
		for _, w := range workloads {
			if subset(s.m("spec", "selector"), w.m("spec", "template", "metadata", "labels")) {
				if target != nil {
					t.Errorf("%s selects both %s and %s", s.id(), target.id(), w.id())
				}
				target = w
			}
		}
		if target == nil {
			t.Errorf("%s selects no workload", s.id())
			continue
		}
		cp := containerPorts(target)
		for _, p := range s.list("spec", "ports") {
			po := obj(p.(map[string]any))
			tp := po.str("targetPort")
			if _, ok := cp[tp]; !ok {
				t.Errorf("%s: targetPort %q is not a port of %s", s.id(), tp, target.id())
			} else if po.get("port") != cp[tp] {
				t.Errorf("%s: port %v != container port %s=%d", s.id(), po.get("port"), tp, cp[tp])
			}
		}
	}

	// StatefulSets are addressed through their headless governing Services.
	for _, ss := range []obj{nsqd, lookupd} {
		svc := find(t, objs, "Service", ss.str("spec", "serviceName"))
		if svc.str("spec", "clusterIP") != "None" {
			t.Errorf("%s: governing %s is not headless", ss.id(), svc.id())
		}
	}
	if r, _ := lookupd.get("spec", "replicas").(int); r != 3 {
		t.Errorf("%s: replicas %v, want 3", lookupd.id(), lookupd.get("spec", "replicas"))
	}
	find(t, objs, "Service", "nsqadmin")
	find(t, objs, "PodDisruptionBudget", "nsqlookupd")

	// nsqd and nsqadmin list every lookupd replica by its stable name and port.
	lookupdNames := func(port int) []string {
		var out []string
		n, _ := lookupd.get("spec", "replicas").(int)
		for i := range n {
			out = append(out, fmt.Sprintf("nsqlookupd-%d.%s:%d", i, lookupd.str("spec", "serviceName"), port))
		}
		return out
	}
	lports := containerPorts(lookupd)
	flagValues := func(w obj, flag string) []string {
		var out []string
		for _, a := range argsOf(w) {
			if v, ok := strings.CutPrefix(a, flag+"="); ok {
				out = append(out, v)
			}
		}
		return out
	}
	if got, want := flagValues(nsqd, "--lookupd-tcp-address"), lookupdNames(lports["tcp"]); !slices.Equal(got, want) {
		t.Errorf("nsqd --lookupd-tcp-address %q, want every lookupd %q", got, want)
	}
	if got, want := flagValues(admin, "--lookupd-http-address"), lookupdNames(lports["http"]); !slices.Equal(got, want) {
		t.Errorf("nsqadmin --lookupd-http-address %q, want every lookupd %q", got, want)
	}
	if got := flagValues(nsqd, "--broadcast-address"); len(got) != 1 || !strings.HasPrefix(got[0], "$(POD_NAME)."+nsqd.str("spec", "serviceName")+".") {
		t.Errorf("nsqd --broadcast-address %q, want the pod's name under its headless service", got)
	}

	// nsqd's data volume: a claim template mounted where --data-path points.
	dataPaths := flagValues(nsqd, "--data-path")
	if len(dataPaths) != 1 {
		t.Fatalf("nsqd --data-path %q", dataPaths)
	}
	vcts := nsqd.list("spec", "volumeClaimTemplates")
	if len(vcts) != 1 {
		t.Fatalf("nsqd: want one volumeClaimTemplate, got %d", len(vcts))
	}
	vct := obj(vcts[0].(map[string]any))
	mounted := false
	for _, vm := range nsqd.list("spec", "template", "spec", "containers", 0, "volumeMounts") {
		v := obj(vm.(map[string]any))
		if v.str("name") == vct.str("metadata", "name") && v.str("mountPath") == dataPaths[0] {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("nsqd: claim %q is not mounted at --data-path %s", vct.str("metadata", "name"), dataPaths[0])
	}
	if vct.str("spec", "resources", "requests", "storage") == "" || !slices.Contains(vct.list("spec", "accessModes"), any("ReadWriteOnce")) {
		t.Errorf("nsqd: claim template %v", vct)
	}
	if fsg, _ := nsqd.get("spec", "template", "spec", "securityContext", "fsGroup").(int); fsg == 0 {
		t.Errorf("nsqd: no fsGroup, the volume may not be writable by the non-root user")
	}
	if g, _ := nsqd.get("spec", "template", "spec", "terminationGracePeriodSeconds").(int); g < 30 {
		t.Errorf("nsqd: terminationGracePeriodSeconds %d, give nsqd time to flush to disk", g)
	}
	if p := nsqd.str("spec", "template", "metadata", "annotations", "prometheus.io/port"); p != strconv.Itoa(containerPorts(nsqd)["http"]) {
		t.Errorf("nsqd: prometheus.io/port %q is not the http port", p)
	}

	// The ConfigMap's nsqd.toml is mounted where --config points, and loads
	// (checked value by value through a running nsqd).
	configs := flagValues(nsqd, "--config")
	if len(configs) != 1 {
		t.Fatalf("nsqd --config %q", configs)
	}
	var cmName, mountPath string
	for _, v := range nsqd.list("spec", "template", "spec", "volumes") {
		vo := obj(v.(map[string]any))
		if n := vo.str("configMap", "name"); n != "" {
			for _, vm := range nsqd.list("spec", "template", "spec", "containers", 0, "volumeMounts") {
				if obj(vm.(map[string]any)).str("name") == vo.str("name") {
					cmName, mountPath = n, obj(vm.(map[string]any)).str("mountPath")
				}
			}
		}
	}
	cm := find(t, objs, "ConfigMap", cmName)
	key := strings.TrimPrefix(configs[0], mountPath+"/")
	text := cm.str("data", key)
	if text == "" || key == configs[0] {
		t.Fatalf("nsqd --config %s: not a key of ConfigMap %s mounted at %s", configs[0], cmName, mountPath)
	}
	t.Run("configmap nsqd.toml", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), key)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		checkNSQDConfigFile(t, p, []string{"--config=" + p})
	})

	t.Run("kubectl kustomize", func(t *testing.T) {
		kubectl, err := exec.LookPath("kubectl")
		if err != nil {
			t.Skip("kubectl not installed; the checks above still ran")
		}
		out, err := exec.Command(kubectl, "kustomize", "k8s").CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl kustomize deploy/k8s: %v\n%s", err, out)
		}
		if n := strings.Count(string(out), "\nkind: "); n != len(objs) {
			t.Errorf("kubectl kustomize rendered %d objects, want %d", n, len(objs))
		}
	})
}
