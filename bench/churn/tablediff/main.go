// Command tablediff checks that two Parquet table files hold the same
// content: the same schema and, row by row, the same values and nulls
// (floats exactly equal, NaN equal to NaN). The file bytes may differ (row groups,
// pages, encodings). Exit 0: same; 1: different (the first difference is
// printed); 2: unreadable.
//
//	go run ./bench/churn/tablediff A.parquet B.parquet
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/orch-dev/orch/pkg/stages/table"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: tablediff A.parquet B.parquet")
		os.Exit(2)
	}
	same, err := diff(context.Background(), os.Args[1], os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "tablediff:", err)
		os.Exit(2)
	}
	if same != "" {
		fmt.Println(same)
		os.Exit(1)
	}
	fmt.Println("same content")
}

// diff returns "" when a and b hold the same content, else the first
// difference.
func diff(ctx context.Context, a, b string) (string, error) {
	ra, err := table.Open(ctx, a, nil)
	if err != nil {
		return "", err
	}
	defer ra.Close()
	rb, err := table.Open(ctx, b, nil)
	if err != nil {
		return "", err
	}
	defer rb.Close()
	if !ra.Schema().Equal(rb.Schema()) {
		return fmt.Sprintf("schemas differ:\n%v\n%v", ra.Schema(), rb.Schema()), nil
	}
	// The two files may be cut into batches differently: compare through
	// per-column queues of slices.
	ncol := ra.Schema().NumFields()
	type side struct {
		r    *table.Reader
		cols []arrow.Array // the rest of the current batch, per column
		done bool
	}
	sa, sb := &side{r: ra}, &side{r: rb}
	fill := func(s *side) error {
		for !s.done && (s.cols == nil || s.cols[0].Len() == 0) {
			rec, err := s.r.Next()
			if err != nil {
				return err
			}
			if rec == nil {
				s.done = true
				return nil
			}
			s.cols = make([]arrow.Array, ncol)
			for c := range ncol {
				s.cols[c] = rec.Column(c)
				s.cols[c].Retain()
			}
		}
		return nil
	}
	var row int64
	for {
		if err := fill(sa); err != nil {
			return "", fmt.Errorf("%s: %w", a, err)
		}
		if err := fill(sb); err != nil {
			return "", fmt.Errorf("%s: %w", b, err)
		}
		if sa.done || sb.done {
			if sa.done != sb.done {
				return fmt.Sprintf("row counts differ: one file ends at row %d", row), nil
			}
			return "", nil
		}
		n := min(sa.cols[0].Len(), sb.cols[0].Len())
		for c := range ncol {
			x := array.NewSlice(sa.cols[c], 0, int64(n))
			y := array.NewSlice(sb.cols[c], 0, int64(n))
			eq := array.ApproxEqual(x, y, array.WithNaNsEqual(true), array.WithAbsTolerance(0))
			x.Release()
			y.Release()
			if !eq {
				return fmt.Sprintf("column %s differs in rows %d..%d", ra.Schema().Field(c).Name, row, row+int64(n)), nil
			}
		}
		for _, s := range []*side{sa, sb} {
			for c := range ncol {
				rest := array.NewSlice(s.cols[c], int64(n), int64(s.cols[c].Len()))
				s.cols[c].Release()
				s.cols[c] = rest
			}
		}
		row += int64(n)
	}
}
