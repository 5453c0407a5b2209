package spool

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strconv"
)

// repairTail cuts a partial entry off the end of the log's last segment
// and returns how many bytes it cut. tidwall/wal frames each entry as its
// length (uvarint) and its bytes, and refuses to open a segment that ends
// inside one; only the last segment can, since a segment is fsync'd and
// closed before the next is started.
func repairTail(dir string) (int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var segs []string
	for _, e := range ents {
		if name := e.Name(); len(name) == 20 && !e.IsDir() {
			if _, err := strconv.ParseUint(name, 10, 64); err == nil {
				segs = append(segs, name)
			}
		}
	}
	if len(segs) == 0 {
		return 0, nil
	}
	slices.Sort(segs)
	path := filepath.Join(dir, segs[len(segs)-1])
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	good := 0
	for good < len(data) {
		size, n := binary.Uvarint(data[good:])
		if n <= 0 || uint64(len(data)-good-n) < size {
			break
		}
		good += n + int(size)
	}
	if good == len(data) {
		return 0, nil
	}
	if err := os.Truncate(path, int64(good)); err != nil {
		return 0, err
	}
	return int64(len(data) - good), nil
}
