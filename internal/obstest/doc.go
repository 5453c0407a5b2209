// Package obstest checks what operators rely on against the real tools.
//
//   - The Prometheus configuration, alert rules and Grafana dashboard in
//     deploy/ are loaded into a real Prometheus that scrapes a running
//     pipeline; every query they hold must parse and return data.
//   - The logs of a pipeline fed personal data through every endpoint, and
//     through malformed requests, must not contain any of it.
//   - The health endpoints answer as load balancers and orchestrators expect.
//
// The package holds tests only.
package obstest
