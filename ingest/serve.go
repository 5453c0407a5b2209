package ingest

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// Serve answers requests on l until ctx ends, then stops accepting
// connections and lets requests in flight finish within ShutdownTimeout.
// With TLSCert and TLSKey set it serves HTTPS, negotiating HTTP/2 (ALPN h2)
// or HTTP/1.1; browsers send their many small beacon requests over one
// HTTP/2 connection.
func (c *Collector) Serve(ctx context.Context, l net.Listener) error {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true) // takes effect over TLS
	srv := &http.Server{
		Protocols:         &protocols,
		Handler:           c.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		// net/http's own log lines can carry client addresses; route them
		// to zap at debug level without the message.
		ErrorLog: zap.NewStdLog(c.log.Named("http").WithOptions(zap.IncreaseLevel(zap.ErrorLevel))),
	}
	errc := make(chan error, 1)
	go func() {
		if c.cfg.TLSCert != "" {
			errc <- srv.ServeTLS(l, c.cfg.TLSCert, c.cfg.TLSKey)
			return
		}
		errc <- srv.Serve(l)
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), c.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		c.log.Warn("collector: requests still in flight at shutdown deadline", zap.Error(err))
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
