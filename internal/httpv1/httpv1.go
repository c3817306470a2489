// Package httpv1 holds the HTTP plumbing shared by the nsqd, nsqlookupd and
// admin HTTP servers: a router configured for NSQ's "V1" response conventions
// (protocol.md §8.1) and a decorator that turns a handler returning
// (value, error) into a V1 response.
//
// Typical use:
//
//	r := httpv1.NewRouter(logger)
//	r.GET("/ping", func(w http.ResponseWriter, _ *http.Request, _ httprouter.Params) {
//		httpv1.PlainText(w, http.StatusOK, "OK")
//	})
//	r.GET("/info", httpv1.V1(func(w http.ResponseWriter, r *http.Request, _ httprouter.Params) (any, error) {
//		return info, nil
//	}))
package httpv1

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"

	"github.com/julienschmidt/httprouter"
)

// Header names and values of the V1 format.
const (
	// HeaderNSQContentType is set on every V1 response (success and error).
	// go-nsq relies on it to recognise the unwrapped V1 format.
	HeaderNSQContentType = "X-NSQ-Content-Type"
	// NSQContentTypeV1 is the value of HeaderNSQContentType.
	NSQContentTypeV1 = "nsq; version=1.0"

	contentTypeJSON = "application/json; charset=utf-8"
	contentTypeText = "text/plain; charset=utf-8"
)

// Err is an HTTP error with a status code and the V1 message text. A handler
// wrapped by V1 that returns an Err (or *Err, possibly wrapped) answers
// Code with the body {"message":Text}.
type Err struct {
	Code int
	Text string
}

// Error returns the V1 message text.
func (e Err) Error() string { return e.Text }

// APIHandler is an HTTP handler in the V1 style: it returns the response value
// (nil, a string, a []byte or anything JSON-encodable) or an error.
type APIHandler func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) (any, error)

// NewRouter returns an httprouter.Router configured per protocol.md §8.1:
// unknown paths answer 404 {"message":"NOT_FOUND"}, a known path with the
// wrong method answers 405 {"message":"METHOD_NOT_ALLOWED"} with an Allow
// header, OPTIONS on a known path answers 200 with an Allow header, a path with
// an extra trailing slash or in the wrong letter case is redirected to the
// registered path (301 for GET, 307 otherwise), and a
// handler panic answers 500 {"message":"INTERNAL_ERROR"} and is logged.
// A nil logger discards logs.
func NewRouter(logger *slog.Logger) *httprouter.Router {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := httprouter.New()
	r.RedirectTrailingSlash = true
	r.RedirectFixedPath = true // the reference redirects /STATS to /stats
	r.HandleMethodNotAllowed = true
	r.HandleOPTIONS = true
	r.NotFound = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		WriteError(w, http.StatusNotFound, "NOT_FOUND")
	})
	r.MethodNotAllowed = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		WriteError(w, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED")
	})
	r.PanicHandler = func(w http.ResponseWriter, req *http.Request, p any) {
		logger.Error("http handler panic", "method", req.Method, "path", req.URL.Path, "panic", fmt.Sprint(p))
		WriteError(w, http.StatusInternalServerError, "INTERNAL_ERROR")
	}
	return r
}

// V1 wraps h into an httprouter.Handle writing the V1 response:
//   - a malformed query string answers 400 INVALID_REQUEST without calling h;
//   - nil value: 200, empty body, Content-Length 0, no Content-Type;
//   - string or []byte: 200 text/plain, the raw bytes;
//   - any other value: 200 compact JSON without a trailing newline;
//   - an Err: {"message":Text} with its Code;
//   - any other error: 500 INTERNAL_ERROR (the error is not shown to the peer).
//
// X-NSQ-Content-Type is set on every response.
func V1(h APIHandler) httprouter.Handle {
	return func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		if _, err := Query(r); err != nil {
			WriteError(w, ErrInvalidRequest.Code, ErrInvalidRequest.Text)
			return
		}
		v, err := h(w, r, ps)
		if err != nil {
			var e Err
			var pe *Err
			switch {
			case errors.As(err, &e):
				WriteError(w, e.Code, e.Text)
			case errors.As(err, &pe) && pe != nil:
				WriteError(w, pe.Code, pe.Text)
			default:
				WriteError(w, http.StatusInternalServerError, "INTERNAL_ERROR")
			}
			return
		}
		WriteValue(w, http.StatusOK, v)
	}
}

// WriteValue writes v with the given status in the V1 format (see V1).
// A value that fails to encode as JSON answers 500 INTERNAL_ERROR.
func WriteValue(w http.ResponseWriter, code int, v any) {
	h := w.Header()
	h.Set(HeaderNSQContentType, NSQContentTypeV1)
	var body []byte
	switch t := v.(type) {
	case nil:
		h.Set("Content-Length", "0")
		w.WriteHeader(code)
		return
	case string:
		h.Set("Content-Type", contentTypeText)
		body = []byte(t)
	case []byte:
		h.Set("Content-Type", contentTypeText)
		body = t
	default:
		b, err := json.Marshal(v)
		if err != nil {
			WriteError(w, http.StatusInternalServerError, "INTERNAL_ERROR")
			return
		}
		h.Set("Content-Type", contentTypeJSON)
		body = b
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// WriteError writes the V1 error body {"message":text} with the given status,
// Content-Type application/json and X-NSQ-Content-Type.
func WriteError(w http.ResponseWriter, code int, text string) {
	b, _ := json.Marshal(struct {
		Message string `json:"message"`
	}{text})
	h := w.Header()
	h.Set(HeaderNSQContentType, NSQContentTypeV1)
	h.Set("Content-Type", contentTypeJSON)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// PlainText writes body as text/plain with the given status and without
// X-NSQ-Content-Type (the /ping format).
func PlainText(w http.ResponseWriter, code int, body string) {
	h := w.Header()
	h.Set("Content-Type", contentTypeText)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
}

// ErrInvalidRequest is the V1 answer to a malformed query string.
var ErrInvalidRequest = Err{Code: http.StatusBadRequest, Text: "INVALID_REQUEST"}

// Query parses the request's URL query string. Parameters come from the query
// string only (request bodies of action endpoints are ignored); use Get on
// the result so the first of repeated values wins. On a malformed query
// string the error wraps ErrInvalidRequest, so a V1 handler can return it as
// is and answer 400 INVALID_REQUEST.
func Query(r *http.Request) (url.Values, error) {
	v, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("parse query string %q: %w: %w", r.URL.RawQuery, ErrInvalidRequest, err)
	}
	return v, nil
}
