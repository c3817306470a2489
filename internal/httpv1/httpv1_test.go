package httpv1

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/julienschmidt/httprouter"
)

func newTestServer(t *testing.T) *httptest.Server {
	t.Helper()
	r := NewRouter(nil)
	r.GET("/ping", func(w http.ResponseWriter, _ *http.Request, _ httprouter.Params) {
		PlainText(w, http.StatusOK, "OK")
	})
	r.GET("/json", V1(func(http.ResponseWriter, *http.Request, httprouter.Params) (any, error) {
		return map[string]any{"a": 1, "b": "<x>"}, nil
	}))
	r.POST("/json", V1(func(http.ResponseWriter, *http.Request, httprouter.Params) (any, error) {
		return nil, nil
	}))
	r.GET("/text", V1(func(http.ResponseWriter, *http.Request, httprouter.Params) (any, error) {
		return "OK", nil
	}))
	r.GET("/bytes", V1(func(http.ResponseWriter, *http.Request, httprouter.Params) (any, error) {
		return []byte("raw\n"), nil
	}))
	r.POST("/empty", V1(func(http.ResponseWriter, *http.Request, httprouter.Params) (any, error) {
		return nil, nil
	}))
	r.GET("/err", V1(func(http.ResponseWriter, *http.Request, httprouter.Params) (any, error) {
		return nil, Err{Code: 400, Text: "MISSING_ARG_TOPIC"}
	}))
	r.GET("/wrapped", V1(func(http.ResponseWriter, *http.Request, httprouter.Params) (any, error) {
		return nil, fmt.Errorf("context: %w", &Err{Code: 404, Text: "TOPIC_NOT_FOUND"})
	}))
	r.GET("/other", V1(func(http.ResponseWriter, *http.Request, httprouter.Params) (any, error) {
		return nil, errors.New("disk on fire")
	}))
	r.GET("/panic", V1(func(http.ResponseWriter, *http.Request, httprouter.Params) (any, error) {
		panic("boom")
	}))
	r.GET("/query", V1(func(_ http.ResponseWriter, r *http.Request, _ httprouter.Params) (any, error) {
		q, err := Query(r)
		if err != nil {
			return nil, err
		}
		return q.Get("topic"), nil
	}))
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return srv
}

func TestV1Responses(t *testing.T) {
	srv := newTestServer(t)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	tests := []struct {
		method, path string
		code         int
		body         string
		ctype        string // "" means the header must be absent
		nsqHeader    bool
		allow        string
		location     string
	}{
		{"GET", "/ping", 200, "OK", "text/plain; charset=utf-8", false, "", ""},
		{"GET", "/json", 200, `{"a":1,"b":"\u003cx\u003e"}`, "application/json; charset=utf-8", true, "", ""},
		{"GET", "/text", 200, "OK", "text/plain; charset=utf-8", true, "", ""},
		{"GET", "/bytes", 200, "raw\n", "text/plain; charset=utf-8", true, "", ""},
		{"POST", "/empty", 200, "", "", true, "", ""},
		{"GET", "/err", 400, `{"message":"MISSING_ARG_TOPIC"}`, "application/json; charset=utf-8", true, "", ""},
		{"GET", "/wrapped", 404, `{"message":"TOPIC_NOT_FOUND"}`, "application/json; charset=utf-8", true, "", ""},
		{"GET", "/other", 500, `{"message":"INTERNAL_ERROR"}`, "application/json; charset=utf-8", true, "", ""},
		{"GET", "/panic", 500, `{"message":"INTERNAL_ERROR"}`, "application/json; charset=utf-8", true, "", ""},
		{"GET", "/nope", 404, `{"message":"NOT_FOUND"}`, "application/json; charset=utf-8", true, "", ""},
		{"PUT", "/json", 405, `{"message":"METHOD_NOT_ALLOWED"}`, "application/json; charset=utf-8", true, "GET, OPTIONS, POST", ""},
		{"DELETE", "/ping", 405, `{"message":"METHOD_NOT_ALLOWED"}`, "application/json; charset=utf-8", true, "GET, OPTIONS", ""},
		{"OPTIONS", "/json", 200, "", "", false, "GET, OPTIONS, POST", ""},
		{"GET", "/query?topic=a&topic=b", 200, "a", "text/plain; charset=utf-8", true, "", ""},
		{"GET", "/query?topic=%zz", 400, `{"message":"INVALID_REQUEST"}`, "application/json; charset=utf-8", true, "", ""},
		{"GET", "/query?x=1;y=2", 400, `{"message":"INVALID_REQUEST"}`, "application/json; charset=utf-8", true, "", ""},
		{"GET", "/text/", 301, "", "", false, "", "/text"},
		{"POST", "/empty/", 307, "", "", false, "", "/empty"},
		{"GET", "/text/?a=1", 301, "", "", false, "", "/text?a=1"},
		{"GET", "/TEXT", 301, "", "", false, "", "/text"},
		{"POST", "/Empty/", 307, "", "", false, "", "/empty"},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.code {
				t.Errorf("status = %d, want %d", resp.StatusCode, tc.code)
			}
			if tc.location != "" {
				if got := resp.Header.Get("Location"); got != tc.location {
					t.Errorf("Location = %q, want %q", got, tc.location)
				}
				return
			}
			if string(body) != tc.body {
				t.Errorf("body = %q, want %q", body, tc.body)
			}
			ct, hasCT := resp.Header["Content-Type"]
			if tc.ctype == "" && hasCT {
				t.Errorf("Content-Type = %q, want none", ct)
			}
			if tc.ctype != "" && resp.Header.Get("Content-Type") != tc.ctype {
				t.Errorf("Content-Type = %q, want %q", resp.Header.Get("Content-Type"), tc.ctype)
			}
			if got := resp.Header.Get(HeaderNSQContentType); (got == NSQContentTypeV1) != tc.nsqHeader {
				t.Errorf("X-NSQ-Content-Type = %q, want present=%v", got, tc.nsqHeader)
			}
			if got := resp.Header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow = %q, want %q", got, tc.allow)
			}
			if resp.ContentLength != int64(len(tc.body)) {
				t.Errorf("Content-Length = %d, want %d", resp.ContentLength, len(tc.body))
			}
		})
	}
}

func TestQueryFirstValueWins(t *testing.T) {
	r := httptest.NewRequest("GET", "/x?topic=first&topic=second&channel=", nil)
	q, err := Query(r)
	if err != nil {
		t.Fatal(err)
	}
	if q.Get("topic") != "first" {
		t.Fatalf("topic = %q", q.Get("topic"))
	}
	if _, ok := q["channel"]; !ok {
		t.Fatal("empty parameter lost")
	}
	_, err = Query(httptest.NewRequest("GET", "/x?a=%", nil))
	var e Err
	if err == nil || !strings.Contains(err.Error(), "a=%") || !errors.As(err, &e) || e != ErrInvalidRequest {
		t.Fatalf("malformed query error = %v", err)
	}
	// A V1 handler returning Query's error answers 400 INVALID_REQUEST.
	w := httptest.NewRecorder()
	V1(func(_ http.ResponseWriter, r *http.Request, _ httprouter.Params) (any, error) {
		r.URL.RawQuery = "a=%zz" // malformed after V1's own check
		_, err := Query(r)
		return nil, err
	})(w, httptest.NewRequest("GET", "/x", nil), nil)
	if w.Code != 400 || w.Body.String() != `{"message":"INVALID_REQUEST"}` {
		t.Fatalf("got %d %s", w.Code, w.Body)
	}
}

func TestErrIs(t *testing.T) {
	err := fmt.Errorf("x: %w", Err{Code: 403, Text: "FORBIDDEN"})
	var e Err
	if !errors.As(err, &e) || e.Code != 403 || e.Error() != "FORBIDDEN" {
		t.Fatalf("errors.As = %+v", e)
	}
}
