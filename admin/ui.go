package admin

import (
	"bytes"
	"embed"
	"html"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path"
	"strings"

	"github.com/julienschmidt/httprouter"
)

//go:embed ui/static
var embedded embed.FS

// assets returns the UI files: the embedded copy, or DevStaticDir when set.
func (a *Admin) assets() fs.FS {
	if a.opts.DevStaticDir != "" {
		return os.DirFS(a.opts.DevStaticDir)
	}
	sub, _ := fs.Sub(embedded, "ui/static")
	return sub
}

// servePage answers every UI page with index.html; the client-side app routes by path.
func (a *Admin) servePage(w http.ResponseWriter, _ *http.Request, _ httprouter.Params) {
	b, err := fs.ReadFile(a.assets(), "index.html")
	if err != nil {
		http.Error(w, "index.html missing", http.StatusInternalServerError)
		return
	}
	base := strings.TrimSuffix(a.opts.BasePath, "/") + "/"
	b = bytes.ReplaceAll(b, []byte("{{BASE}}"), []byte(html.EscapeString(base)))
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(b)
}

// serveStatic answers /static/<file> from the UI assets.
func (a *Admin) serveStatic(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	name := strings.TrimPrefix(path.Clean(ps.ByName("filepath")), "/")
	b, err := fs.ReadFile(a.assets(), name)
	if err != nil || name == "index.html" {
		http.NotFound(w, r)
		return
	}
	ct := mime.TypeByExtension(path.Ext(name))
	if ct == "" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(b)
}
