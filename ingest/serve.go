package ingest

import (
	"context"
	"net"
)

// Serve answers requests on l until ctx ends, then stops accepting
// connections and lets requests in flight finish within ShutdownTimeout.
// With TLSCert and TLSKey set it serves HTTPS, negotiating HTTP/2 (ALPN h2)
// or HTTP/1.1; browsers send their many small beacon requests over one
// HTTP/2 connection. The listener's timeouts, header limit and connection
// cap are collector.server's (see internal/httpserve).
func (c *Collector) Serve(ctx context.Context, l net.Listener) error {
	return c.server.Serve(ctx, l)
}
