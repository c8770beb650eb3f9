package stages

import (
	"context"
	"fmt"
	"math"
	"sync"
	"syscall"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/orch-dev/orch/pkg/stages/table"
)

// mlModelColumns names the columns train and validate read from a features
// table.
type mlModelColumns struct {
	features []string
	label    string
	id       string
}

// mlIsFeatureType reports whether a column of type dt can be a model feature.
func mlIsFeatureType(dt arrow.DataType) bool {
	switch dt.ID() {
	case arrow.FLOAT32, arrow.FLOAT64, arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64,
		arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64, arrow.BOOL:
		return true
	}
	return false
}

// mlTableSchema returns the schema of a table file without reading its
// rows.
func mlTableSchema(ctx context.Context, path string) (*arrow.Schema, error) {
	r, err := table.Open(ctx, path, nil)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r.Schema(), nil
}

// mlResolveFeatures checks the model columns against a table's schema; with no
// features given it picks every numeric or boolean column but the label and
// the id, in table order.
func mlResolveFeatures(schema *arrow.Schema, mc *mlModelColumns, path string) error {
	for _, c := range []struct{ what, name string }{{"label", mc.label}, {"id", mc.id}} {
		if len(schema.FieldIndices(c.name)) == 0 {
			return fmt.Errorf("%s: no %s column %q (columns: %s)", path, c.what, c.name, mlColumnList(schema))
		}
	}
	if mc.features == nil {
		for _, f := range schema.Fields() {
			if f.Name != mc.label && f.Name != mc.id && mlIsFeatureType(f.Type) {
				mc.features = append(mc.features, f.Name)
			}
		}
		if len(mc.features) == 0 {
			return fmt.Errorf("%s: no numeric or boolean columns besides the label %q and the id %q to use as features", path, mc.label, mc.id)
		}
		return nil
	}
	seen := map[string]bool{}
	for _, name := range mc.features {
		idx := schema.FieldIndices(name)
		switch {
		case seen[name]:
			return fmt.Errorf("feature %q is listed twice", name)
		case name == mc.label || name == mc.id:
			return fmt.Errorf("feature %q is the label or the id column", name)
		case len(idx) == 0:
			return fmt.Errorf("%s: no feature column %q (columns: %s)", path, name, mlColumnList(schema))
		case !mlIsFeatureType(schema.Field(idx[0]).Type):
			return fmt.Errorf("%s: feature column %q is %s, not numeric: encode it in the features stage (one-hot, dictionary codes) or leave it out", path, name, schema.Field(idx[0]).Type)
		}
		seen[name] = true
	}
	return nil
}

func mlColumnList(s *arrow.Schema) string {
	out := ""
	for i, f := range s.Fields() {
		if i > 0 {
			out += ", "
		}
		if i == 12 {
			return out + fmt.Sprintf("… %d more", s.NumFields()-12)
		}
		out += f.Name
	}
	return out
}

// mlGrow returns s resliced to n elements, reallocated if too small.
func mlGrow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// mlBadRow is a value error at a row of the current batch.
type mlBadRow struct {
	row int
	msg string
}

func (e *mlBadRow) Error() string { return fmt.Sprintf("row %d: %s", e.row, e.msg) }

func mlRowErr(err error, base int) error {
	if br, ok := err.(*mlBadRow); ok {
		return &mlBadRow{row: br.row + base, msg: br.msg}
	}
	return err
}

// mlLogLossOfMargin is the log loss of margin z (log-odds) against label y.
func mlLogLossOfMargin(z float64, y uint8) float64 {
	if y == 1 {
		return mlSoftplus(-z)
	}
	return mlSoftplus(z)
}

// mlCheckFinite reports whether every value is finite.
func mlCheckFinite(vs ...float64) bool {
	for _, v := range vs {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return false
		}
	}
	return true
}

// mlArena hands out large pointer-free slices from anonymous memory maps,
// outside the Go heap. The training columns are most of a train stage's
// memory; on the heap they would double the garbage collector's goal (the
// goal is twice the live heap), so the garbage of decoding batches could
// pile up to their size again. Outside it, the heap stays small and is
// collected often. Callers ask for what they fill: maps are populated when
// made (MAP_POPULATE), which costs about a quarter less CPU than faulting
// their pages in one by one. Slices from an arena must not be used after
// free.
//
// With heap set, it hands out heap slices instead: for columns small next
// to the heap the stages before in the process left free (a logistic
// fit's, its boolean features listed: 143 MB of the churn table against
// 440), reusing those resident pages costs less than returning them to
// the OS (debug.FreeOSMemory) and faulting in fresh ones, and the
// pipeline's peak stays where it was (0.82 GB; without returning them
// and with maps, 0.97).
type mlArena struct {
	heap bool
	mu   sync.Mutex
	maps [][]byte
}

// bytes returns n zeroed bytes, from a map when n is large. It is safe
// for concurrent use: populating maps on all cores is faster.
func (a *mlArena) bytes(n int) []byte {
	if n < 1<<20 || a.heap {
		return make([]byte, n)
	}
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE|syscall.MAP_POPULATE)
	if err != nil {
		return make([]byte, n) // no map: the heap will do
	}
	a.mu.Lock()
	a.maps = append(a.maps, b)
	a.mu.Unlock()
	return b
}

// float32s returns an empty slice with capacity n.
func (a *mlArena) float32s(n int) []float32 {
	if n == 0 {
		return nil
	}
	b := a.bytes(4 * n)
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), n)[:0]
}

// free unmaps every map; slices from the arena must not be used after.
func (a *mlArena) free() {
	for _, b := range a.maps {
		_ = syscall.Munmap(b)
	}
	a.maps = nil
}
