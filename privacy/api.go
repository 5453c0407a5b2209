package privacy

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"

	"go.uber.org/zap"
)

// LoadAdminToken reads the admin bearer token from the configured file or
// environment variable. An empty result leaves the admin APIs closed.
func LoadAdminToken(cfg Config) (string, error) {
	if cfg.AdminTokenFile != "" {
		b, err := os.ReadFile(cfg.AdminTokenFile)
		if err != nil {
			return "", errors.New("privacy.admin_token_file cannot be read")
		}
		return strings.TrimSpace(string(b)), nil
	}
	if cfg.AdminTokenEnv != "" {
		return strings.TrimSpace(os.Getenv(cfg.AdminTokenEnv)), nil
	}
	return "", nil
}

// API serves the privacy endpoints for operators: Mixpanel's GDPR API v3
// (data deletions and retrievals) and Veil's opt-out registry. Every call
// needs the admin bearer token; `token` names the project as in Mixpanel.
type API struct {
	mux      *http.ServeMux
	tasks    *Tasks
	registry *Registry
	token    string
	project  func(token string) (string, bool)
	log      *zap.Logger
}

// NewAPI builds the API. project resolves a project token to its name.
func NewAPI(tasks *Tasks, registry *Registry, adminToken string, project func(string) (string, bool), log *zap.Logger) *API {
	if log == nil {
		log = zap.NewNop()
	}
	a := &API{mux: http.NewServeMux(), tasks: tasks, registry: registry, token: adminToken, project: project, log: log}
	a.routes(a.mux)
	return a
}

// ServeHTTP answers the API's paths, all under /api/.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

func (a *API) routes(mux *http.ServeMux) {
	mux.HandleFunc("/api/app/data-deletions/v3.0/", a.serveTasks(KindDeletion, "/api/app/data-deletions/v3.0/"))
	mux.HandleFunc("/api/app/data-retrievals/v3.0/", a.serveTasks(KindRetrieval, "/api/app/data-retrievals/v3.0/"))
	mux.HandleFunc("/api/veil/optouts", a.serveOptOuts)
}

type apiError struct {
	Status string `json:"status"`
	Error  string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, apiError{Status: "error", Error: msg})
}

// authorize checks the bearer token and resolves the project.
func (a *API) authorize(w http.ResponseWriter, r *http.Request) (string, bool) {
	if !a.validToken(r.Header.Values("Authorization")) {
		w.Header().Set("WWW-Authenticate", "Bearer")
		fail(w, http.StatusUnauthorized, "a valid admin bearer token is required (Authorization: Bearer TOKEN)")
		return "", false
	}
	project, ok := a.project(r.URL.Query().Get("token"))
	if !ok {
		fail(w, http.StatusBadRequest, "token must name a known project")
		return "", false
	}
	return project, true
}

// validToken reports whether the request's one Authorization header is
// the Bearer scheme (RFC 6750) with the admin token. The scheme's name is
// case-insensitive (RFC 7235) and required: a bare token is refused, so a
// token sent by mistake under another scheme (Basic) never counts. The
// tokens are compared by their SHA-256 digests in constant time, which
// hides their length as well as their bytes.
func (a *API) validToken(header []string) bool {
	if a.token == "" || len(header) != 1 {
		return false
	}
	scheme, cred, ok := strings.Cut(header[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	cred = strings.TrimLeft(cred, " ") // 1*SP between scheme and token
	if cred == "" {
		return false
	}
	got, want := sha256.Sum256([]byte(cred)), sha256.Sum256([]byte(a.token))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

type idsRequest struct {
	DistinctIDs    []string `json:"distinct_ids"`
	ComplianceType string   `json:"compliance_type"`
}

func readIDs(r *http.Request) (idsRequest, error) {
	var req idsRequest
	b, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		return req, errors.New("could not read the body")
	}
	// Mixpanel takes JSON, and also form-encoded payloads: accept both.
	if err := json.Unmarshal(b, &req); err != nil {
		return req, errors.New("body must be JSON with distinct_ids")
	}
	if len(req.DistinctIDs) == 0 {
		return req, errors.New("distinct_ids must list at least one id")
	}
	if len(req.DistinctIDs) > 2000 {
		return req, errors.New("distinct_ids may list at most 2000 ids")
	}
	for _, id := range req.DistinctIDs {
		if id == "" {
			return req, errors.New("distinct_ids must not contain an empty id")
		}
	}
	return req, nil
}

func (a *API) serveTasks(kind, prefix string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		project, ok := a.authorize(w, r)
		if !ok {
			return
		}
		rest := strings.Trim(strings.TrimPrefix(r.URL.Path, prefix), "/")
		id, download := strings.CutSuffix(rest, "/download")
		switch {
		case rest == "" && r.Method == http.MethodPost:
			req, err := readIDs(r)
			if err != nil {
				fail(w, http.StatusBadRequest, err.Error())
				return
			}
			switch req.ComplianceType {
			case "", "GDPR", "CCPA":
			default:
				fail(w, http.StatusBadRequest, "compliance_type must be GDPR or CCPA")
				return
			}
			if req.ComplianceType == "" {
				req.ComplianceType = "GDPR"
			}
			task, err := a.tasks.Create(r.Context(), kind, project, req.ComplianceType, req.DistinctIDs)
			if err != nil {
				a.log.Warn("creating a privacy task failed", zap.Error(err))
				fail(w, http.StatusServiceUnavailable, "could not record the request; retry")
				return
			}
			a.log.Info("privacy task created", zap.String("task_id", task.ID), zap.String("kind", kind), zap.Int("ids", len(req.DistinctIDs)))
			writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "results": map[string]string{"task_id": task.ID}})
		case rest != "" && r.Method == http.MethodGet:
			task, err := a.tasks.Get(r.Context(), kind, id)
			if a.taskError(w, err) {
				return
			}
			if task.Project != project {
				fail(w, http.StatusNotFound, "no such task")
				return
			}
			if download {
				if kind != KindRetrieval || task.Status != StatusSuccess {
					fail(w, http.StatusNotFound, "no result to download")
					return
				}
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Content-Disposition", `attachment; filename="veil-retrieval-`+task.ID+`.json"`)
				_, _ = io.WriteString(w, task.Result)
				return
			}
			result := ""
			if kind == KindRetrieval && task.Status == StatusSuccess {
				result = prefix + task.ID + "/download?token=" + r.URL.Query().Get("token")
			}
			writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "results": map[string]any{
				"status": task.Status, "result": result, "compliance_type": task.ComplianceType,
				"distinct_id_count": task.IDCount, "requested_at": task.RequestedAt,
			}})
		case rest != "" && r.Method == http.MethodDelete:
			_, err := a.tasks.Cancel(r.Context(), kind, id)
			if errors.Is(err, ErrTooLate) {
				fail(w, http.StatusBadRequest, err.Error())
				return
			}
			if a.taskError(w, err) {
				return
			}
			writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "results": map[string]string{"status": StatusRevoked}})
		default:
			fail(w, http.StatusMethodNotAllowed, "use POST to create, GET to read and DELETE to cancel a task")
		}
	}
}

func (a *API) taskError(w http.ResponseWriter, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, ErrNotFound):
		fail(w, http.StatusNotFound, "no such task")
	default:
		a.log.Warn("reading a privacy task failed", zap.Error(err))
		fail(w, http.StatusServiceUnavailable, "could not read the task; retry")
	}
	return true
}

// serveOptOuts adds (POST) or removes (DELETE) distinct_ids in the opt-out
// registry.
func (a *API) serveOptOuts(w http.ResponseWriter, r *http.Request) {
	project, ok := a.authorize(w, r)
	if !ok {
		return
	}
	if r.Method != http.MethodPost && r.Method != http.MethodDelete {
		fail(w, http.StatusMethodNotAllowed, "use POST to opt users out and DELETE to remove them from the registry")
		return
	}
	req, err := readIDs(r)
	if err != nil {
		fail(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := a.registry.Set(r.Context(), project, req.DistinctIDs, r.Method == http.MethodPost); err != nil {
		a.log.Warn("updating the opt-out registry failed", zap.Error(err))
		fail(w, http.StatusServiceUnavailable, "could not update the registry; retry")
		return
	}
	a.log.Info("opt-out registry updated", zap.Bool("opted_out", r.Method == http.MethodPost), zap.Int("ids", len(req.DistinctIDs)))
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "results": map[string]int{"updated": len(req.DistinctIDs)}})
}
