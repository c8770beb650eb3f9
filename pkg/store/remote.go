package store

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Remote is a parsed remote cache location: an S3 bucket and prefix, or a
// directory (a shared file system) holding a local store.
//
// Forms:
//
//	s3://BUCKET[/PREFIX][?SETTING=VALUE&...]
//	file:///ABSOLUTE/PATH
//	/absolute/path, ./relative/path
//
// S3 settings: endpoint (an http:// or https:// URL), region, path_style
// (true or false), multipart_threshold and part_size (bytes, or with a
// KiB/MiB/GiB or KB/MB/GB suffix), concurrency (1–64), max_attempts (1–20).
type Remote struct {
	// URL is the remote as given (for messages).
	URL string
	// S3 is set for an s3:// remote.
	S3 *S3Config
	// Dir is set for a directory remote.
	Dir string
}

// RemoteSettings lists the settings an s3:// remote accepts.
var RemoteSettings = []string{"endpoint", "region", "path_style", "multipart_threshold", "part_size", "concurrency", "max_attempts"}

var (
	bucketRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{1,61}[a-zA-Z0-9]$`)
	regionRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	schemeRe = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
)

// ParseRemote parses a remote: an s3:// URL whose query holds settings, a
// file:// URL, or a directory path. Errors name the part or setting at
// fault and what is allowed.
func ParseRemote(s string) (*Remote, error) {
	return ParseRemoteSettings(s, nil)
}

// ParseRemoteSettings parses a remote as ParseRemote does, with more
// settings given apart (as from a config file); a setting may not be given
// both ways.
func ParseRemoteSettings(s string, settings map[string]string) (*Remote, error) {
	r := &Remote{URL: s}
	fail := func(format string, args ...any) (*Remote, error) {
		return nil, fmt.Errorf("remote %q: %s", s, fmt.Sprintf(format, args...))
	}
	if strings.TrimSpace(s) == "" {
		return fail("empty (want s3://BUCKET/PREFIX, file:///PATH or a directory)")
	}
	scheme, rest, hasScheme := strings.Cut(s, "://")
	if !hasScheme {
		if schemeRe.MatchString(s) {
			return fail("want s3://BUCKET/PREFIX, file:///PATH or a directory")
		}
		if len(settings) > 0 {
			return fail("settings %s apply to s3:// remotes only", keys(settings))
		}
		abs, err := filepath.Abs(s)
		if err != nil {
			return fail("%v", err)
		}
		r.Dir = abs
		return r, nil
	}
	switch scheme {
	case "file":
		u, err := url.Parse(s)
		if err != nil {
			return fail("%v", err)
		}
		if u.Host != "" && u.Host != "localhost" {
			return fail("file URL with host %q: want file:///ABSOLUTE/PATH", u.Host)
		}
		if u.Path == "" || !strings.HasPrefix(u.Path, "/") {
			return fail("want file:///ABSOLUTE/PATH")
		}
		if u.RawQuery != "" || len(settings) > 0 {
			return fail("settings apply to s3:// remotes only")
		}
		r.Dir = filepath.Clean(u.Path)
		return r, nil
	case "s3":
	default:
		return fail("scheme %q not supported (allowed: s3://BUCKET/PREFIX, file:///PATH, or a directory path)", scheme)
	}

	path, query, _ := strings.Cut(rest, "?")
	bucket, prefix, _ := strings.Cut(path, "/")
	if !bucketRe.MatchString(bucket) {
		return fail("bucket %q: want 3 to 63 letters, digits, '.', '-' or '_', starting and ending with a letter or digit", bucket)
	}
	prefix = strings.Trim(prefix, "/")
	if strings.Contains(prefix, "//") || slices.Contains(strings.Split(prefix, "/"), "..") || slices.Contains(strings.Split(prefix, "/"), ".") {
		return fail("prefix %q: want slash-separated names without empty, '.' or '..' parts", prefix)
	}
	cfg := &S3Config{Bucket: bucket, Prefix: prefix}

	all := map[string]string{}
	q, err := url.ParseQuery(query)
	if err != nil {
		return fail("settings %q: %v", query, err)
	}
	for k, vs := range q {
		if len(vs) > 1 {
			return fail("setting %s given %d times", k, len(vs))
		}
		all[k] = vs[0]
	}
	for k, v := range settings {
		if _, dup := all[k]; dup {
			return fail("setting %s given both in the URL and apart", k)
		}
		all[k] = v
	}
	names := make([]string, 0, len(all))
	for k := range all {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if err := cfg.set(k, all[k]); err != nil {
			return fail("%v", err)
		}
	}
	if cfg.PartSize > 0 && cfg.MultipartThreshold > 0 && cfg.MultipartThreshold < cfg.PartSize {
		return fail("setting multipart_threshold %d is below part_size %d", cfg.MultipartThreshold, cfg.PartSize)
	}
	r.S3 = cfg
	return r, nil
}

func keys(m map[string]string) string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return strings.Join(ks, ", ")
}

// set applies one setting of an s3:// remote.
func (c *S3Config) set(k, v string) error {
	bad := func(want string) error {
		return fmt.Errorf("setting %s: %q is not %s", k, v, want)
	}
	switch k {
	case "endpoint":
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return bad("an endpoint URL (allowed: http://HOST[:PORT] or https://HOST[:PORT])")
		}
		c.Endpoint = strings.TrimSuffix(v, "/")
	case "region":
		if !regionRe.MatchString(v) {
			return bad("a region (allowed: lower-case letters, digits and '-', e.g. us-east-1)")
		}
		c.Region = v
	case "path_style":
		b, ok := map[string]bool{"true": true, "false": false}[v]
		if !ok {
			return bad("a boolean (allowed: true, false)")
		}
		c.PathStyle = &b
	case "multipart_threshold", "part_size":
		n, err := ParseSize(v)
		if err != nil || n < MinPartSize || n > 5<<30 {
			return bad("a size from 5MiB to 5GiB (allowed: bytes, or a number with KiB, MiB, GiB, KB, MB or GB)")
		}
		if k == "part_size" {
			c.PartSize = n
		} else {
			c.MultipartThreshold = n
		}
	case "concurrency":
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 64 {
			return bad("a number of parts in flight (allowed: 1 to 64)")
		}
		c.Concurrency = n
	case "max_attempts":
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 20 {
			return bad("a number of attempts per request (allowed: 1 to 20)")
		}
		c.MaxAttempts = n
	default:
		return fmt.Errorf("unknown setting %q (allowed: %s)", k, strings.Join(RemoteSettings, ", "))
	}
	return nil
}

// ParseSize parses a byte count: digits, optionally followed by KiB, MiB,
// GiB (powers of 1024) or KB, MB, GB (powers of 1000), or B.
func ParseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	num, mult := s, int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want a byte count such as 16MiB", s)
	}
	return n * mult, nil
}

// String returns the remote's canonical name: s3://BUCKET/PREFIX (without
// settings) or the directory.
func (r *Remote) String() string {
	if r.S3 != nil {
		if r.S3.Prefix == "" {
			return "s3://" + r.S3.Bucket
		}
		return "s3://" + r.S3.Bucket + "/" + r.S3.Prefix
	}
	return r.Dir
}

// Open returns the remote's store. It sends no request.
func (r *Remote) Open(ctx context.Context) (Store, error) {
	if r.S3 != nil {
		return OpenS3(ctx, *r.S3)
	}
	return OpenLocal(r.Dir)
}

// Tiered returns a tiered store with local in front of the remote; onError
// gets the first remote failure (see Tiered).
func (r *Remote) Tiered(ctx context.Context, local *Local, onError func(error)) (*Tiered, error) {
	remote, err := r.Open(ctx)
	if err != nil {
		return nil, err
	}
	return &Tiered{Local: local, Remote: remote, Name: r.String(), OnRemoteError: onError}, nil
}

// CheckRemoteSetting reports whether value is allowed for the s3:// remote
// setting name; the error names the setting and the allowed values (as in
// ParseRemote's errors).
func CheckRemoteSetting(name, value string) error {
	var c S3Config
	return c.set(name, value)
}
