package pipeline

import (
	"fmt"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/orch-dev/orch/pkg/store"
)

// cacheKeys are the keys of the top-level `cache:` section: the remote,
// and the settings of an s3:// remote (as in its URL query).
var cacheKeys = append([]string{"remote"}, store.RemoteSettings...)

// cacheSection reads
//
//	cache:
//	  remote: s3://BUCKET/PREFIX   # or file:///PATH, or a directory
//	  endpoint: http://minio:9000  # s3:// settings, each checked here
//	  path_style: true
//
// A relative directory remote is relative to the workspace root.
func (l *loader) cacheSection(n *yaml.Node) Cache {
	var (
		c          Cache
		remoteNode *yaml.Node
		remote     string
		settings   = map[string]string{}
		firstSet   *yaml.Node
	)
	l.mapping(n, "cache", nil, func(key string, k, v *yaml.Node) {
		if !contains(cacheKeys, key) {
			l.errAt(k, "unknown key %q in cache%s (allowed: %s)", key, l.didYouMean(key, cacheKeys), strings.Join(cacheKeys, ", "))
			return
		}
		s, ok := l.str(v, "cache."+key)
		if !ok {
			return
		}
		if key == "remote" {
			remoteNode, remote = v, s
			return
		}
		if firstSet == nil {
			firstSet = k
		}
		if err := store.CheckRemoteSetting(key, s); err != nil {
			l.errAt(v, "cache: %v", err)
			return
		}
		settings[key] = s
	})
	if remoteNode == nil {
		if firstSet != nil {
			l.errAt(firstSet, "cache: settings need a remote: add remote: s3://BUCKET/PREFIX")
		}
		return c
	}
	if remote != "" && !strings.Contains(remote, ":") && !filepath.IsAbs(remote) {
		remote = filepath.Join(l.root, remote)
	}
	r, err := store.ParseRemoteSettings(remote, settings)
	if err != nil {
		l.errAt(remoteNode, "cache.remote: %s", strings.TrimPrefix(err.Error(), fmt.Sprintf("remote %q: ", remote)))
		return c
	}
	c.Remote = r
	return c
}
