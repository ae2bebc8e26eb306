package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
)

// Backend is what the API serves; the agent implements it. Methods return an
// *Error for conditions the caller should see as such (no quorum, not found);
// any other error is reported as internal.
type Backend interface {
	Status(ctx context.Context) (Status, error)
	Properties(ctx context.Context) ([]Property, error)
	SetProperty(ctx context.Context, name, value string) (WriteResult, error)
	DeleteProperty(ctx context.Context, name string) (WriteResult, error)
	Join(ctx context.Context, req JoinRequest) (JoinResponse, error)
	RemoveNode(ctx context.Context, name string) (WriteResult, error)
	ResourceBackend
	FencingBackend
}

// maxBody caps request bodies: the API takes small JSON documents only.
const maxBody = 1 << 20

// NewHandler returns the /v1 API. Every request must carry a bearer token that
// checkToken accepts; the comparison is the caller's (constant time).
func NewHandler(b Backend, checkToken func(string) bool, log *slog.Logger) http.Handler {
	s := &server{b: b, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", s.status)
	mux.HandleFunc("GET /v1/properties", s.properties)
	mux.HandleFunc("GET /v1/properties/{name}", s.property)
	mux.HandleFunc("PUT /v1/properties/{name}", s.setProperty)
	mux.HandleFunc("DELETE /v1/properties/{name}", s.deleteProperty)
	mux.HandleFunc("POST /v1/nodes", s.join)
	mux.HandleFunc("DELETE /v1/nodes/{name}", s.removeNode)
	s.routeResources(mux)
	s.routeFencing(mux)
	s.routeDatastores(mux)
	s.routeMigration(mux)
	s.routeForce(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !checkToken(tok) {
			log.Warn("api request refused: bad or missing token", "remote", r.RemoteAddr, "path", r.URL.Path)
			writeError(w, Errorf(CodeUnauthorized, "unauthorized: missing or wrong API token (derived from the cluster key)"))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

type server struct {
	b   Backend
	log *slog.Logger
}

func (s *server) status(w http.ResponseWriter, r *http.Request) {
	st, err := s.b.Status(r.Context())
	s.reply(w, r, st, err)
}

func (s *server) properties(w http.ResponseWriter, r *http.Request) {
	ps, err := s.b.Properties(r.Context())
	s.reply(w, r, ps, err)
}

func (s *server) property(w http.ResponseWriter, r *http.Request) {
	ps, err := s.b.Properties(r.Context())
	if err != nil {
		s.reply(w, r, nil, err)
		return
	}
	name := r.PathValue("name")
	for _, p := range ps {
		if p.Name == name {
			s.reply(w, r, p, nil)
			return
		}
	}
	s.reply(w, r, nil, Errorf(CodeNotFound, "property %q is not set", name))
}

type setPropertyBody struct {
	Value string `json:"value"`
}

func (s *server) setProperty(w http.ResponseWriter, r *http.Request) {
	var body setPropertyBody
	if err := decode(r, &body); err != nil {
		s.reply(w, r, nil, err)
		return
	}
	res, err := s.b.SetProperty(r.Context(), r.PathValue("name"), body.Value)
	s.reply(w, r, res, err)
}

func (s *server) deleteProperty(w http.ResponseWriter, r *http.Request) {
	res, err := s.b.DeleteProperty(r.Context(), r.PathValue("name"))
	s.reply(w, r, res, err)
}

func (s *server) join(w http.ResponseWriter, r *http.Request) {
	var req JoinRequest
	if err := decode(r, &req); err != nil {
		s.reply(w, r, nil, err)
		return
	}
	res, err := s.b.Join(r.Context(), req)
	s.reply(w, r, res, err)
}

func (s *server) removeNode(w http.ResponseWriter, r *http.Request) {
	res, err := s.b.RemoveNode(r.Context(), r.PathValue("name"))
	s.reply(w, r, res, err)
}

// decode reads a JSON body strictly: unknown fields and trailing data are
// errors, so a client of a newer API version learns it at once.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Errorf(CodeBadRequest, "bad request body: %v", err)
	}
	if dec.More() {
		return Errorf(CodeBadRequest, "bad request body: trailing data")
	}
	return nil
}

func (s *server) reply(w http.ResponseWriter, r *http.Request, v any, err error) {
	if err != nil {
		var ae *Error
		if !errors.As(err, &ae) {
			s.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			ae = Errorf(CodeInternal, "internal error: %v", err)
		}
		writeError(w, ae)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus(e.Code))
	_ = json.NewEncoder(w).Encode(e)
}

// The shapes of a route: every handler reads its inputs (a path value, a
// JSON body, both or neither), calls one Backend method and replies.

func onPlain[T any](s *server, f func(context.Context) (T, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := f(r.Context())
		s.reply(w, r, v, err)
	}
}

func onPath[T any](s *server, key string, f func(context.Context, string) (T, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := f(r.Context(), r.PathValue(key))
		s.reply(w, r, v, err)
	}
}

func onBody[R, T any](s *server, f func(context.Context, R) (T, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req R
		if !s.decode(w, r, &req) {
			return
		}
		v, err := f(r.Context(), req)
		s.reply(w, r, v, err)
	}
}

func onPathBody[R, T any](s *server, key string, f func(context.Context, string, R) (T, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req R
		if !s.decode(w, r, &req) {
			return
		}
		v, err := f(r.Context(), r.PathValue(key), req)
		s.reply(w, r, v, err)
	}
}
