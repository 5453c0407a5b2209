package app

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"strconv"
	"strings"
)

// Secret references keep passwords, tokens and keys out of the
// configuration file: any string value of it may be, or contain,
//
//	${file:/etc/veil/secrets/clickhouse-password}   the file's content, less trailing newlines
//	${env:VEIL_CLICKHOUSE_PASSWORD}                 the environment variable's value
//
// so that the file itself can live in a ConfigMap or a repository while the
// secrets come from a Kubernetes Secret, a mounted file or the environment.
// `$${` stands for a literal `${`. Other text, `$email` or `${x}` included,
// is taken as written. References are resolved once, after the file is
// decoded and before it is validated, for every key alike, so a key added to
// any section is covered without a `_file` variant of its own.
//
// Errors name the key and where the value was to come from, never the value.

const (
	refFile = "${file:"
	refEnv  = "${env:"
)

// secretSource reads what a reference names: the process's files and
// environment (osSecrets), or a test's.
type secretSource struct {
	readFile  func(string) ([]byte, error)
	lookupEnv func(string) (string, bool)
}

func osSecrets() secretSource { return secretSource{readFile: os.ReadFile, lookupEnv: os.LookupEnv} }

// resolveSecretRefs replaces the references in every string of cfg, which
// must be a pointer to a struct decoded from YAML; key paths in errors are
// spelt with the yaml names.
func resolveSecretRefs(cfg any, src secretSource) error {
	v := reflect.ValueOf(cfg)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return errors.New("resolveSecretRefs: want a pointer to a struct")
	}
	return src.walk(v.Elem(), "")
}

func (src secretSource) walk(v reflect.Value, path string) error {
	switch v.Kind() {
	case reflect.String:
		s, err := src.expand(v.String(), path)
		if err != nil {
			return err
		}
		if s != v.String() {
			v.SetString(s)
		}
	case reflect.Pointer:
		if !v.IsNil() {
			return src.walk(v.Elem(), path)
		}
	case reflect.Interface:
		if v.IsNil() {
			return nil
		}
		c := reflect.New(v.Elem().Type()).Elem()
		c.Set(v.Elem())
		if err := src.walk(c, path); err != nil {
			return err
		}
		v.Set(c)
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "-" {
				continue
			}
			p := path
			if name != "" || !f.Anonymous {
				if name == "" {
					name = strings.ToLower(f.Name)
				}
				p = joinKey(path, name)
			}
			if err := src.walk(v.Field(i), p); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			if err := src.walk(v.Index(i), path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
	case reflect.Map:
		// Map values are not addressable: resolve a copy and put it back.
		// Keys are names (projects, tables), never secrets, and stay as written.
		iter := v.MapRange()
		type change struct{ k, v reflect.Value }
		var changes []change
		for iter.Next() {
			c := reflect.New(v.Type().Elem()).Elem()
			c.Set(iter.Value())
			if err := src.walk(c, joinKey(path, fmt.Sprint(iter.Key().Interface()))); err != nil {
				return err
			}
			changes = append(changes, change{iter.Key(), c})
		}
		for _, ch := range changes {
			v.SetMapIndex(ch.k, ch.v)
		}
	}
	return nil
}

func joinKey(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// expand resolves the references in one value; key is its path in the file.
func (src secretSource) expand(s, key string) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		if i > 0 && s[i-1] == '$' {
			// `$${` is a literal `${`: keep one dollar.
			b.WriteString(s[:i])
			b.WriteString("{")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		s = s[i:]
		var scheme string
		switch {
		case strings.HasPrefix(s, refFile):
			scheme = "file"
		case strings.HasPrefix(s, refEnv):
			scheme = "env"
		default:
			b.WriteString("${")
			s = s[2:]
			continue
		}
		end := strings.IndexByte(s, '}')
		if end < 0 {
			return "", fmt.Errorf("%s: a ${%s:…} reference has no closing brace", key, scheme)
		}
		name := s[len(scheme)+3 : end]
		s = s[end+1:]
		if name == "" {
			return "", fmt.Errorf("%s: ${%s:} names nothing", key, scheme)
		}
		switch scheme {
		case "file":
			content, err := src.readFile(name)
			if err != nil {
				var pe *fs.PathError
				if errors.As(err, &pe) {
					err = pe.Err // the path is named already
				}
				return "", fmt.Errorf("%s: ${file:%s}: %w", key, name, err)
			}
			b.WriteString(strings.TrimRight(string(content), "\r\n"))
		case "env":
			value, ok := src.lookupEnv(name)
			if !ok {
				return "", fmt.Errorf("%s: ${env:%s}: the environment variable is not set", key, name)
			}
			b.WriteString(value)
		}
	}
}
