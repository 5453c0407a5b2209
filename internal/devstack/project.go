package devstack

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"

	"github.com/veilhq/veil/ingest"
)

// ProjectFile is the name, in the data directory, of the file that holds
// the credentials of `veil dev`'s project.
const ProjectFile = "project.json"

// ProjectName is the name of `veil dev`'s project: the project column of
// what it stores.
const ProjectName = "dev"

// Project is the one project `veil dev` serves, with the credentials
// Mixpanel gives a project: the public token SDKs send, the API secret
// and a service account that /import authenticates. They are made up at
// random on the first run and kept in DIR/project.json, so that an SDK
// configured with them keeps working from one run to the next; the
// collector refuses any other, as a production collector does.
type Project struct {
	Token          string         `json:"token"`
	APISecret      string         `json:"api_secret"`
	ProjectID      string         `json:"project_id"`
	ServiceAccount ServiceAccount `json:"service_account"`
}

// ServiceAccount may import into the project (HTTP Basic
// username:secret, with ?project_id=).
type ServiceAccount struct {
	Username string `json:"username"`
	Secret   string `json:"secret"`
}

// collector is p as the collector's configuration. A project with no
// service account (the load generator's ceilings have none) gets none.
func (p Project) collector() ([]ingest.Project, []ingest.ServiceAccount) {
	projects := []ingest.Project{{Name: ProjectName, ID: p.ProjectID, Token: p.Token, Secret: p.APISecret}}
	if p.ServiceAccount == (ServiceAccount{}) {
		return projects, nil
	}
	return projects, []ingest.ServiceAccount{{Username: p.ServiceAccount.Username, Secret: p.ServiceAccount.Secret, Projects: []string{projects[0].ID}}}
}

// validate names the first field of the project file that is missing.
func (p Project) validate() error {
	switch {
	case p.Token == "":
		return errors.New("token must be set")
	case p.APISecret == "":
		return errors.New("api_secret must be set")
	case p.ProjectID == "":
		return errors.New("project_id must be set")
	case p.ServiceAccount.Username == "":
		return errors.New("service_account.username must be set")
	case p.ServiceAccount.Secret == "":
		return errors.New("service_account.secret must be set")
	}
	return nil
}

// ReadProject reads the project of the `veil dev` whose data directory is
// dir.
func ReadProject(dir string) (Project, error) {
	path := filepath.Join(dir, ProjectFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return Project{}, err
	}
	var p Project
	if err := json.Unmarshal(b, &p); err != nil {
		return Project{}, fmt.Errorf("%s is not a project file: %w", path, err)
	}
	if err := p.validate(); err != nil {
		return Project{}, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// ensureProject returns the project kept in dir, making one up and
// writing it there, readable by its owner only, on the first run.
func ensureProject(dir string) (Project, error) {
	p, err := ReadProject(dir)
	if !errors.Is(err, os.ErrNotExist) {
		return p, err
	}
	if p, err = newProject(); err != nil {
		return Project{}, err
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return Project{}, err
	}
	// Written whole, then renamed, so that a run stopped halfway leaves
	// no file the next run would refuse.
	tmp := filepath.Join(dir, ProjectFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return Project{}, fmt.Errorf("creating %s: %w", ProjectFile, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, ProjectFile)); err != nil {
		return Project{}, fmt.Errorf("creating %s: %w", ProjectFile, err)
	}
	return p, nil
}

// newProject makes up credentials shaped like Mixpanel's: 32 hex digits
// for the token and the API secret, a numeric project id, and a service
// account named as Mixpanel names them.
func newProject() (Project, error) {
	hexOf := func(n int) (string, error) {
		b := make([]byte, n)
		if _, err := rand.Read(b); err != nil {
			return "", err
		}
		return hex.EncodeToString(b), nil
	}
	var p Project
	var err error
	if p.Token, err = hexOf(16); err != nil {
		return p, err
	}
	if p.APISecret, err = hexOf(16); err != nil {
		return p, err
	}
	id, err := rand.Int(rand.Reader, big.NewInt(9_000_000))
	if err != nil {
		return p, err
	}
	p.ProjectID = fmt.Sprint(1_000_000 + id.Int64())
	tag, err := hexOf(3)
	if err != nil {
		return p, err
	}
	p.ServiceAccount.Username = "veil-dev." + tag + ".mp-service-account"
	if p.ServiceAccount.Secret, err = hexOf(24); err != nil {
		return p, err
	}
	return p, nil
}
