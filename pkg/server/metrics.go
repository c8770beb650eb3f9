package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/orch-dev/orch/pkg/engine"
)

// metrics are serve's Prometheus metrics, on their own registry.
type metrics struct {
	reg *prometheus.Registry

	runs          *prometheus.CounterVec
	active        *prometheus.GaugeVec
	stageDuration *prometheus.HistogramVec
	hits, misses  *prometheus.CounterVec
	restored      *prometheus.CounterVec
	stored        *prometheus.CounterVec
	uploaded      prometheus.Counter
	downloaded    prometheus.Counter
	lastTick      *prometheus.GaugeVec
	loadError     *prometheus.GaugeVec
	notifyFailed  *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orch_runs_total", Help: "Runs finished, by pipeline and status (succeeded, failed, cancelled).",
		}, []string{"pipeline", "status"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "orch_runs_active", Help: "Runs in progress, by pipeline.",
		}, []string{"pipeline"}),
		stageDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "orch_stage_duration_seconds",
			Help:    "Wall time of executed stages (cache misses), by pipeline, stage and outcome (ran, failed).",
			Buckets: []float64{0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400},
		}, []string{"pipeline", "stage", "outcome"}),
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orch_cache_hits_total", Help: "Stages restored from the cache, by pipeline.",
		}, []string{"pipeline"}),
		misses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orch_cache_misses_total", Help: "Stages executed because the cache had no result, by pipeline.",
		}, []string{"pipeline"}),
		restored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orch_cache_restored_bytes_total", Help: "Bytes of stage outputs restored from the cache, by pipeline.",
		}, []string{"pipeline"}),
		stored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orch_cache_stored_bytes_total", Help: "Bytes of stage outputs stored in the cache, by pipeline.",
		}, []string{"pipeline"}),
		uploaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orch_cache_uploaded_bytes_total", Help: "Blob bytes uploaded to the remote cache.",
		}),
		downloaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orch_cache_downloaded_bytes_total", Help: "Blob bytes downloaded from the remote cache.",
		}),
		lastTick: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "orch_scheduler_last_tick_timestamp_seconds",
			Help: "Unix time of the last schedule tick processed (run or skipped), by pipeline; alert when it falls behind the schedule.",
		}, []string{"pipeline"}),
		loadError: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "orch_pipeline_load_error",
			Help: "1 when the pipeline file's last edit does not load (the last good version keeps running), by file.",
		}, []string{"file"}),
		notifyFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orch_notify_failures_total", Help: "on_failure commands and webhooks that failed, by pipeline.",
		}, []string{"pipeline"}),
	}
	m.reg.MustRegister(m.runs, m.active, m.stageDuration, m.hits, m.misses, m.restored, m.stored,
		m.uploaded, m.downloaded, m.lastTick, m.loadError, m.notifyFailed,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// event counts one engine event of a run of pipeline p.
func (m *metrics) event(p string, ev engine.Event) {
	switch ev.Type {
	case engine.EvHit:
		m.hits.WithLabelValues(p).Inc()
		m.restored.WithLabelValues(p).Add(float64(ev.Bytes))
	case engine.EvStart:
		m.misses.WithLabelValues(p).Inc()
	case engine.EvRan:
		m.stageDuration.WithLabelValues(p, ev.Stage, "ran").Observe(ev.Duration.Seconds())
		m.stored.WithLabelValues(p).Add(float64(ev.Bytes))
	case engine.EvFailed:
		if ev.Duration > 0 {
			m.stageDuration.WithLabelValues(p, ev.Stage, "failed").Observe(ev.Duration.Seconds())
		}
	}
}

func (m *metrics) tick(p string, t time.Time) {
	m.lastTick.WithLabelValues(p).Set(float64(t.UnixMilli()) / 1000)
}
