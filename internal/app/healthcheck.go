package app

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Healthcheck is `veil healthcheck URL`: it succeeds when URL answers 200
// within timeout. Veil's image has no shell or curl, so container
// runtimes' health checks (Docker, Compose) run the binary itself against
// /healthz or /readyz; Kubernetes probes need none of this.
func Healthcheck(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	// /readyz says what it waits for in a line of text.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %d: %s", url, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}
