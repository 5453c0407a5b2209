package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// conn is one keep-alive HTTP/1.1 connection, owned by one sending
// goroutine: a request is written as prepared bytes in one write and the
// answer parsed in place. net/http's client costs two goroutines per
// connection, channel hand-offs and a header map per request; on a machine
// whose cores the server under test shares, that CPU is taken from the
// server and the ceilings measured would be the client's.
type conn struct {
	dialer  *net.Dialer
	addr    string // host:port
	timeout time.Duration

	// mu guards nc and aborted against abort, called from another
	// goroutine when the run's context ends.
	mu      sync.Mutex
	nc      net.Conn
	aborted bool
	br      *bufio.Reader
	// req is the request being built, head and body; body is where the
	// body is built first, for its length.
	req, body []byte
}

// target is where requests go: the address to dial and the request line's
// and Host header's parts.
type target struct {
	addr string // host:port
	host string // the Host header
	path string // the /track path and query, up to the cache buster's value
}

// parseTarget splits a base URL such as http://127.0.0.1:8080 into what the
// connection needs.
func parseTarget(base string) (target, error) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return target{}, fmt.Errorf("loadgen.target must be an http:// URL")
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	return target{addr: addr, host: u.Host, path: u.EscapedPath() + "/track/?verbose=1&ip=1&_="}, nil
}

// errMalformed is an answer that is not HTTP/1.1 as a collector writes it.
var errMalformed = errors.New("loadgen: malformed HTTP answer")

// maxAnswer is the most of an answer's body kept for responseOK: the
// collector's verbose answer is 25 bytes.
const maxAnswer = 64

// roundTrip writes c.req and reads the answer: its status and up to
// maxAnswer bytes of its body into answer. On any error the connection is
// closed, and the next call dials again.
func (c *conn) roundTrip(ctx context.Context, sent time.Time, answer *[maxAnswer]byte) (status int, body []byte, err error) {
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	if c.nc == nil {
		dctx, cancel := context.WithTimeout(ctx, c.timeout)
		nc, err := c.dialer.DialContext(dctx, "tcp", c.addr)
		cancel()
		if err != nil {
			return 0, nil, err
		}
		c.mu.Lock()
		c.nc = nc
		c.mu.Unlock()
		if c.br == nil {
			c.br = bufio.NewReaderSize(nc, 4096)
		} else {
			c.br.Reset(nc)
		}
	}
	if err := c.arm(sent.Add(c.timeout)); err != nil {
		return 0, nil, err
	}
	if _, err := c.nc.Write(c.req); err != nil {
		return 0, nil, err
	}
	return c.readAnswer(answer)
}

// readAnswer parses a status line, the headers that frame the body, and
// the body.
func (c *conn) readAnswer(answer *[maxAnswer]byte) (status int, body []byte, err error) {
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return 0, nil, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, nil, errMalformed
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, nil, errMalformed
	}
	length, chunked, closing := int64(-1), false, line[7] == '0'
	for {
		line, err = c.br.ReadSlice('\n')
		if err != nil {
			return 0, nil, err
		}
		if len(line) <= 2 {
			break // the blank line ending the headers
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return 0, nil, errMalformed
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			length, err = strconv.ParseInt(string(value), 10, 64)
			if err != nil || length < 0 {
				return 0, nil, errMalformed
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			closing = bytes.EqualFold(value, []byte("close"))
		}
	}
	var n int
	switch {
	case length >= 0:
		n = int(min(length, maxAnswer))
		if _, err := io.ReadFull(c.br, answer[:n]); err != nil {
			return 0, nil, noEOF(err)
		}
		if _, err := c.br.Discard(int(length) - n); err != nil {
			return 0, nil, noEOF(err)
		}
	case chunked:
		n, err = readToEOF(httputil.NewChunkedReader(c.br), answer)
	default: // the body runs to the end of the connection
		closing = true
		n, err = readToEOF(c.br, answer)
	}
	if err != nil {
		return 0, nil, err
	}
	if chunked { // the trailer, if any, and the blank line after it
		for {
			if line, err = c.br.ReadSlice('\n'); err != nil {
				return 0, nil, err
			}
			if len(line) <= 2 {
				break
			}
		}
	}
	if closing {
		c.close()
	}
	return status, answer[:n], nil
}

// errAborted is a request on a connection whose run has ended.
var errAborted = errors.New("loadgen: the run ended")

// arm sets the deadline of the next request, unless the run has ended.
func (c *conn) arm(deadline time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted {
		return errAborted
	}
	return c.nc.SetDeadline(deadline)
}

// readToEOF reads r to its end, keeping what fits in answer.
func readToEOF(r io.Reader, answer *[maxAnswer]byte) (int, error) {
	n := 0
	for n < len(answer) {
		m, err := r.Read(answer[n:])
		n += m
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	_, err := io.Copy(io.Discard, r)
	return n, err
}

// noEOF turns the end of a connection in the middle of a body into the
// error it is.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// abort ends the request in flight, from another goroutine.
func (c *conn) abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.aborted = true
	if c.nc != nil {
		_ = c.nc.SetDeadline(time.Unix(1, 0))
	}
}

func (c *conn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nc != nil {
		_ = c.nc.Close()
		c.nc = nil
	}
}
