//go:build !unix

package digest

import (
	"errors"
	"os"
)

// mapFile is not available here; callers read the file instead.
func mapFile(*os.File, int64) ([]byte, func(), error) {
	return nil, nil, errors.New("digest: memory mapping not supported")
}
