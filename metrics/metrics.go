// Package metrics exposes zerofs's Prometheus metrics: per-operation request
// counts and latency histograms of the NBD and NFS servers (fed by their
// Observe hooks), object-store requests, bytes and errors (an instrumented
// store wrapper), and the filesystem's own state — commit latency, WAL depth,
// dirty bytes, caches, GC — read from fs.Status at scrape time.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"zerofs/fs"
	"zerofs/internal/budget"
	"zerofs/internal/pki"
)

// Metrics is one registry of zerofs metrics.
type Metrics struct {
	reg *prometheus.Registry

	nbdRequests *prometheus.CounterVec
	nbdSeconds  *prometheus.HistogramVec
	nbdBytes    *prometheus.CounterVec
	nfsRequests *prometheus.CounterVec
	nfsSeconds  *prometheus.HistogramVec

	storeRequests *prometheus.CounterVec
	storeSeconds  *prometheus.HistogramVec
	storeBytes    *prometheus.CounterVec
}

var latencyBuckets = fs.LatencyBuckets

// New creates the metrics. f may be nil until the filesystem is open; call
// Watch then.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.nbdRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "zerofs_nbd_requests_total", Help: "NBD requests served, by command and result (ok or the errno name).",
	}, []string{"op", "result"})
	m.nbdSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "zerofs_nbd_request_duration_seconds", Help: "NBD request latency, from decoded to replied, by command.",
		Buckets: latencyBuckets,
	}, []string{"op"})
	m.nbdBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "zerofs_nbd_bytes_total", Help: "Bytes read and written over NBD, by command.",
	}, []string{"op"})
	m.nfsRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "zerofs_nfs_requests_total", Help: "NFS and MOUNT procedures served, by procedure and result.",
	}, []string{"proc", "result"})
	m.nfsSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "zerofs_nfs_request_duration_seconds", Help: "NFS procedure latency by procedure.",
		Buckets: latencyBuckets,
	}, []string{"proc"})
	m.storeRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "zerofs_store_requests_total", Help: "Object-store requests by store (main or wal), operation and result (ok, not_found, exists, precondition, error).",
	}, []string{"store", "op", "result"})
	m.storeSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "zerofs_store_request_duration_seconds", Help: "Object-store request latency (including the store's own retries).",
		Buckets: latencyBuckets,
	}, []string{"store", "op"})
	m.storeBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "zerofs_store_bytes_total", Help: "Bytes sent to (put) and received from (get) the object store.",
	}, []string{"store", "op"})
	m.reg.MustRegister(m.nbdRequests, m.nbdSeconds, m.nbdBytes, m.nfsRequests, m.nfsSeconds,
		m.storeRequests, m.storeSeconds, m.storeBytes,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Watch adds the filesystem's own metrics.
func (m *Metrics) Watch(f *fs.FS) { m.reg.MustRegister(&fsCollector{f: f}) }

// WatchRequests exports the servers' shared request budget: payload bytes
// read from clients and not yet applied, and readers waiting for room
// (TCP back-pressure).
func (m *Metrics) WatchRequests(b *budget.Budget) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "zerofs_request_bytes",
			Help: "Request payload bytes read from NBD and NFS clients and not yet applied ([wal] max_request_mb bounds it)."},
			func() float64 { return float64(b.InUse()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "zerofs_request_waiters",
			Help: "Connections waiting for request memory: their sockets are not being read (TCP back-pressure)."},
			func() float64 { return float64(b.Waiting()) }),
	)
}

// WatchCertificate exports the NBD server's TLS certificate: when it
// expires (alert well before: a client cannot connect with an expired one)
// and whether the last reload failed.
func (m *Metrics) WatchCertificate(status func() pki.Status) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "zerofs_nbd_tls_certificate_expiry_timestamp_seconds",
			Help: "When the NBD server's TLS certificate expires (Unix time): alert on time() approaching it."},
			func() float64 { return float64(status().NotAfter.Unix()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "zerofs_nbd_tls_reload_failed",
			Help: "1 if the last reload of the NBD certificates failed (the previous ones stay in use), else 0."},
			func() float64 {
				if status().ReloadError != "" {
					return 1
				}
				return 0
			}),
	)
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// ObserveNBD records one NBD command (nbd.Options.Observe).
func (m *Metrics) ObserveNBD(op string, bytes int, dur time.Duration, err error) {
	m.nbdRequests.WithLabelValues(op, result(err)).Inc()
	m.nbdSeconds.WithLabelValues(op).Observe(dur.Seconds())
	if bytes > 0 {
		m.nbdBytes.WithLabelValues(op).Add(float64(bytes))
	}
}

// ObserveNFS records one NFS procedure (nfs.Options.Observe).
func (m *Metrics) ObserveNFS(proc string, dur time.Duration, err error) {
	m.nfsRequests.WithLabelValues(proc, result(err)).Inc()
	m.nfsSeconds.WithLabelValues(proc).Observe(dur.Seconds())
}

func result(err error) string {
	if err == nil {
		return "ok"
	}
	if e := fs.Errno(err); e != 0 {
		return errnoName(e)
	}
	return "error"
}
