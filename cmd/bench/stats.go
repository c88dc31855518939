package main

import (
	"math"
	"slices"
	"strconv"
	"strings"
)

// quantile returns the q-quantile (0..1) of sorted values by linear
// interpolation between closest ranks; NaN when empty.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	pos := q * float64(len(sorted)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(sorted)-1)
	return sorted[lo] + (sorted[hi]-sorted[lo])*(pos-float64(lo))
}

// median of values (NaN when empty); NaNs are ignored.
func median(values []float64) float64 {
	var v []float64
	for _, x := range values {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	slices.Sort(v)
	return quantile(v, 0.5)
}

// latencies holds latency samples in seconds.
type latencies []float64

func (l latencies) percentiles() (p50, p99, p999 float64) {
	s := slices.Clone(l)
	slices.Sort(s)
	return quantile(s, 0.50), quantile(s, 0.99), quantile(s, 0.999)
}

// slope is the least-squares slope of y over x.
func slope(x, y []float64) float64 {
	n := float64(len(x))
	if len(x) < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range x {
		sx += x[i]
		sy += y[i]
		sxx += x[i] * x[i]
		sxy += x[i] * y[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

// promText is a parsed Prometheus text exposition: series (name with its
// label set as written) to value.
type promText map[string]float64

func parseProm(s string) promText {
	p := promText{}
	for _, line := range strings.Split(s, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		p[line[:i]] = v
	}
	return p
}

// bucket is one cumulative histogram bucket.
type bucket struct {
	le    float64
	count float64
}

// histogram returns the buckets of histogram name (without labels), sorted.
func (p promText) histogram(name string) []bucket {
	var out []bucket
	prefix := name + `_bucket{le="`
	for k, v := range p {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		le, err := strconv.ParseFloat(strings.TrimSuffix(rest, `"}`), 64)
		if err != nil {
			continue
		}
		out = append(out, bucket{le, v})
	}
	slices.SortFunc(out, func(a, b bucket) int {
		switch {
		case a.le < b.le:
			return -1
		case a.le > b.le:
			return 1
		}
		return 0
	})
	return out
}

// histDelta subtracts an earlier scrape's buckets from a later one's.
func histDelta(after, before []bucket) []bucket {
	out := slices.Clone(after)
	for i := range out {
		for _, b := range before {
			if b.le == out[i].le {
				out[i].count -= b.count
			}
		}
	}
	return out
}

// histQuantile estimates the q-quantile as Prometheus' histogram_quantile
// does: linear within the bucket that holds the rank. A rank in the +Inf
// bucket returns the highest finite bound.
func histQuantile(buckets []bucket, q float64) float64 {
	if len(buckets) == 0 {
		return math.NaN()
	}
	total := buckets[len(buckets)-1].count
	if total <= 0 {
		return math.NaN()
	}
	rank := q * total
	prevLe, prevCount := 0.0, 0.0
	for _, b := range buckets {
		if b.count >= rank {
			if math.IsInf(b.le, 1) {
				return prevLe
			}
			if b.count == prevCount {
				return b.le
			}
			return prevLe + (b.le-prevLe)*(rank-prevCount)/(b.count-prevCount)
		}
		prevLe, prevCount = b.le, b.count
	}
	return prevLe
}

// histFractionBelow is the fraction of observations ≤ le, exact when le is
// a bucket bound.
func histFractionBelow(buckets []bucket, le float64) float64 {
	if len(buckets) == 0 || buckets[len(buckets)-1].count <= 0 {
		return math.NaN()
	}
	below := 0.0
	for _, b := range buckets {
		if b.le <= le {
			below = b.count
		}
	}
	return below / buckets[len(buckets)-1].count
}
