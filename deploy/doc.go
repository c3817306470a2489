// Package deploy holds Sluice's deployment material and the tests that check
// it against the real binaries:
//
//   - ../Dockerfile and ../.dockerignore: the container image;
//   - nsqd.toml, nsqlookupd.toml, nsqadmin.toml: example config files;
//   - systemd/: hardened units for the three daemons;
//   - k8s/: Kubernetes manifests (kubectl apply -k deploy/k8s).
//
// The tests build ./apps/... exactly as the Dockerfile does (CGO_ENABLED=0,
// same flags), run the image's default command, start each daemon from its
// systemd ExecStart line with its example config, and check the Kubernetes
// manifests' structure and container arguments. See README.md.
package deploy
