//go:build chdb

package chdbtest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/ch-go/proto"
	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	chdbpurego "github.com/chdb-io/chdb-go/chdb-purego"
)

// Engine is one chDB session (a ClickHouse engine inside this process, its
// data under a directory) behind a loopback HTTP endpoint that speaks the
// part of ClickHouse's HTTP interface clickhouse-go uses.
type Engine struct {
	dir     string
	version string
	ln      net.Listener
	srv     *http.Server
	served  chan error

	mu      sync.Mutex // one query at a time: a chDB connection is not shared
	conn    chdbpurego.ChdbConn
	inserts int
	log     []Statement
}

// Statement is one statement the engine ran for a client, with the code of
// the server's exception if it refused it (0 when it succeeded).
type Statement struct {
	SQL      string
	Settings map[string]string
	Code     int
	Err      string
}

// The engine's configuration: its one user, default, may manage access,
// as Veil's migrating user must on a server of its own (docs/schema.md,
// "The analyst user").
const (
	configXML = `<clickhouse>
  <user_directories>
    <users_xml><path>users.xml</path></users_xml>
  </user_directories>
</clickhouse>
`
	usersXML = `<clickhouse>
  <profiles><default/></profiles>
  <quotas><default/></quotas>
  <users>
    <default>
      <password></password>
      <networks><ip>::1</ip><ip>127.0.0.1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
      <access_management>1</access_management>
    </default>
  </users>
</clickhouse>
`
)

// Start opens a chDB session whose data and configuration live under dir
// and serves it on a loopback port. Only one chDB session may be open in a
// process.
func Start(dir string) (*Engine, error) {
	for name, text := range map[string]string{"config.xml": configXML, "users.xml": usersXML} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			return nil, err
		}
	}
	conn, err := chdbpurego.NewConnectionFromConnString(filepath.Join(dir, "data") + "?config-file=" + filepath.Join(dir, "config.xml"))
	if err != nil {
		return nil, fmt.Errorf("chdbtest: open chDB in %s: %w", dir, err)
	}
	e := &Engine{dir: dir, conn: conn, served: make(chan error, 1)}
	v, err := e.Query("SELECT version()")
	if err != nil {
		conn.Close()
		return nil, err
	}
	e.version = strings.TrimSpace(v)
	e.ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		conn.Close()
		return nil, err
	}
	e.srv = &http.Server{Handler: http.HandlerFunc(e.serveHTTP), ReadHeaderTimeout: 10 * time.Second}
	go func() { e.served <- e.srv.Serve(e.ln) }()
	return e, nil
}

// Version is the engine's own answer to SELECT version().
func (e *Engine) Version() string { return e.version }

// Addr is the HTTP endpoint's host:port.
func (e *Engine) Addr() string { return e.ln.Addr().String() }

// Close stops the endpoint and closes the chDB session.
func (e *Engine) Close() error {
	err := e.srv.Close()
	if serr := <-e.served; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.conn.Close()
	return err
}

// Conn opens clickhouse-go on the engine over HTTP, with the options Veil's
// own connection uses (sink.Connect) apart from the protocol: chDB serves
// no native port. The statements and settings Veil sends are the same on
// both protocols; clickhouse-go binds arguments on the client either way.
func (e *Engine) Conn() (driver.Conn, error) {
	return clickhouse.Open(&clickhouse.Options{
		Protocol:    clickhouse.HTTP,
		Addr:        []string{e.Addr()},
		Auth:        clickhouse.Auth{Database: "default", Username: "default"},
		DialTimeout: 5 * time.Second,
	})
}

// Query runs sql as the engine's default user and returns its output as
// TabSeparated text, the format clickhouse-client prints.
func (e *Engine) Query(sql string) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	out, err := e.run(sql, "TabSeparated")
	return string(out), err
}

// Statements returns what the engine ran for its HTTP clients so far, in
// order.
func (e *Engine) Statements() []Statement {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Statement(nil), e.log...)
}

// run executes one statement; the caller holds mu.
func (e *Engine) run(sql, format string) ([]byte, error) {
	res, err := e.conn.Query(sql, format)
	if err != nil {
		return nil, err
	}
	if res == nil {
		return nil, nil
	}
	defer res.Free()
	if err := res.Error(); err != nil {
		return nil, err
	}
	return bytes.Clone(res.Buf()), nil
}

// The HTTP parameters that are not settings (ClickHouse's HTTPHandler
// reads them itself).
var httpParams = map[string]bool{
	"query": true, "database": true, "default_format": true, "query_id": true, "quota_key": true,
	"user": true, "password": true, "session_id": true, "session_timeout": true, "session_check": true,
	"compress": true, "decompress": true, "buffer_size": true, "wait_end_of_query": true,
	// The HTTP handler writes Native for this client revision; see helloQuery.
	"client_protocol_version": true,
}

// helloQuery is what clickhouse-go asks first over HTTP, reading the answer
// as Native for its own protocol revision (client_protocol_version), which
// is how a server's HTTP handler writes Native: with block info and a
// serialization byte per column. The revision the answer gives decides how
// the client reads every later result. chDB has no HTTP handler and writes
// Native as the Native format does for revision 0, so the engine answers
// the hello itself, in the client's revision, with chDB's name, version and
// time zone and revision 0: the client then reads exactly what chDB
// writes.
const helloQuery = "SELECT displayName(), version(), revision(), timezone()"

// insertData splits an INSERT whose rows follow in the request body.
var insertData = regexp.MustCompile(`(?is)^\s*(INSERT\s+INTO\s.*?)\s+FORMAT\s+(\w+)\s*$`)

var exceptionCode = regexp.MustCompile(`^Code: (\d+)\.`)

func (e *Engine) serveHTTP(w http.ResponseWriter, r *http.Request) {
	params := r.URL.Query()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	sql := params.Get("query")
	var data []byte
	switch {
	case sql == "":
		sql = string(body)
	case len(body) > 0 && insertData.MatchString(sql):
		data = body
	case len(body) > 0:
		sql += "\n" + string(body)
	}
	if sql == helloQuery {
		e.serveHello(w, params.Get("client_protocol_version"))
		return
	}
	var names []string
	settings := map[string]string{}
	for k := range params {
		if !httpParams[k] && !strings.HasPrefix(k, "param_") {
			names = append(names, k)
			settings[k] = params.Get(k)
		}
	}
	sort.Strings(names)
	format := params.Get("default_format")
	if format == "" {
		format = "TabSeparated"
	}

	e.mu.Lock()
	out, err := e.serve(params.Get("database"), names, params, sql, data, format)
	code := 0
	if err != nil {
		code = -1
		if m := exceptionCode.FindStringSubmatch(err.Error()); m != nil {
			code, _ = strconv.Atoi(m[1])
		}
	}
	st := Statement{SQL: sql, Settings: settings, Code: code}
	if err != nil {
		st.Err = err.Error()
	}
	e.log = append(e.log, st)
	e.mu.Unlock()

	if err != nil {
		// As ClickHouse answers: the code in a header and the message, which
		// begins "Code: N.", in the body.
		if code > 0 {
			w.Header().Set("X-ClickHouse-Exception-Code", strconv.Itoa(code))
		}
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, err.Error()+"\n")
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	_, _ = w.Write(out)
}

// serveHello answers helloQuery in the client's revision; see helloQuery.
func (e *Engine) serveHello(w http.ResponseWriter, clientRevision string) {
	rev, err := strconv.Atoi(clientRevision)
	if err != nil {
		http.Error(w, "client_protocol_version: "+err.Error(), http.StatusBadRequest)
		return
	}
	out, err := e.Query("SELECT displayName(), version(), timezone()")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	fields := strings.Split(strings.TrimSuffix(out, "\n"), "\t")
	if len(fields) != 3 {
		http.Error(w, "unexpected answer "+out, http.StatusInternalServerError)
		return
	}
	str := func(v string) *proto.ColStr {
		c := new(proto.ColStr)
		c.Append(v)
		return c
	}
	revision := new(proto.ColUInt32)
	revision.Append(0)
	var buf proto.Buffer
	b := proto.Block{Info: proto.BlockInfo{BucketNum: -1}, Columns: 4, Rows: 1}
	if err := b.EncodeBlock(&buf, rev, []proto.InputColumn{
		{Name: "displayName()", Data: str(fields[0])},
		{Name: "version()", Data: str(fields[1])},
		{Name: "revision()", Data: revision},
		{Name: "timezone()", Data: str(fields[2])},
	}); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(buf.Buf)))
	_, _ = w.Write(buf.Buf)
}

// serve runs one request's statement with its database and settings, and
// restores both; the caller holds mu.
func (e *Engine) serve(database string, names []string, params map[string][]string, sql string, data []byte, format string) ([]byte, error) {
	if database != "" {
		if _, err := e.run("USE "+quoteIdent(database), "TabSeparated"); err != nil {
			return nil, err
		}
		defer e.run("USE default", "TabSeparated") //nolint:errcheck // default always exists
	}
	for _, n := range names {
		if _, err := e.run(fmt.Sprintf("SET %s = %s", n, quoteString(params[n][0])), "TabSeparated"); err != nil {
			return nil, err
		}
		defer e.run(fmt.Sprintf("SET %s = DEFAULT", n), "TabSeparated") //nolint:errcheck // restores a setting just set
	}
	if data != nil {
		// The rows travel through a file: a chDB query is a C string, and
		// Native data holds zero bytes. FROM INFILE feeds them to the same
		// insert pipeline as rows sent after the query.
		m := insertData.FindStringSubmatch(sql)
		e.inserts++
		path := filepath.Join(e.dir, fmt.Sprintf("insert-%d.%s", e.inserts, strings.ToLower(m[2])))
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
		defer os.Remove(path)
		sql = fmt.Sprintf("%s FROM INFILE %s FORMAT %s", m[1], quoteString(path), m[2])
	}
	return e.run(sql, format)
}

func quoteIdent(s string) string {
	return "`" + strings.NewReplacer("\\", "\\\\", "`", "\\`").Replace(s) + "`"
}

func quoteString(s string) string {
	return "'" + strings.NewReplacer("\\", "\\\\", "'", "\\'").Replace(s) + "'"
}
