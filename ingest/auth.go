package ingest

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
)

// credentials resolves /import's HTTP Basic credentials to projects.
// Secrets are held and looked up by their SHA-256, so that neither a map
// lookup nor a comparison takes time that depends on how much of a guess
// was right.
type credentials struct {
	bySecret map[[32]byte]string // project secret or token (as user name) → project name
	accounts map[string]serviceAccount
	byID     map[string]string // project id → project name
}

type serviceAccount struct {
	secret   [32]byte
	projects map[string]bool // project ids
}

func newCredentials(cfg Config) *credentials {
	c := &credentials{
		bySecret: map[[32]byte]string{},
		accounts: map[string]serviceAccount{},
		byID:     map[string]string{},
	}
	for _, p := range cfg.Projects {
		c.bySecret[sha256.Sum256([]byte(p.Token))] = p.Name
		c.byID[p.projectID()] = p.Name
	}
	// A secret wins over another project's token; Validate forbids the clash.
	for _, p := range cfg.Projects {
		if p.Secret != "" {
			c.bySecret[sha256.Sum256([]byte(p.Secret))] = p.Name
		}
	}
	for _, sa := range cfg.ServiceAccounts {
		a := serviceAccount{secret: sha256.Sum256([]byte(sa.Secret)), projects: map[string]bool{}}
		for _, id := range sa.Projects {
			a.projects[id] = true
		}
		c.accounts[sa.Username] = a
	}
	return c
}

// importProject authenticates an /import request the ways Mixpanel accepts:
// a service account's username:secret with ?project_id=, or the project's
// secret or token as the user name with an empty password. It returns the
// project, or a 401 RequestError. It does so whatever the configuration:
// accept_any_token opens the public token, never a secret.
func (c *Collector) importProject(r *http.Request, params *params) (string, *RequestError) {
	user, pass, ok := r.BasicAuth()
	if !ok || user == "" {
		return "", &RequestError{Status: http.StatusUnauthorized, Reason: reasonUnauthorized,
			Msg: "/import needs HTTP Basic credentials: a service account with project_id, or the project secret or token as user name"}
	}
	if p, found := c.authenticate(user, pass, params.get(qProjectID)); found {
		return p, nil
	}
	return "", &RequestError{Status: http.StatusUnauthorized, Reason: reasonUnauthorized, Msg: "Invalid credentials"}
}

func (c *Collector) authenticate(user, pass, projectID string) (string, bool) {
	if pass != "" {
		a, ok := c.creds.accounts[user]
		sum := sha256.Sum256([]byte(pass))
		if !ok || subtle.ConstantTimeCompare(sum[:], a.secret[:]) != 1 || !a.projects[projectID] {
			return "", false
		}
		return c.creds.byID[projectID], true
	}
	p, ok := c.creds.bySecret[sha256.Sum256([]byte(user))]
	return p, ok
}
