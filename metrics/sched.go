package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"zerofs/store/sched"
)

// WatchSched exports the state of a store's scheduler under the label
// store=name ("main" or "wal"), read at scrape time.
//
// Requests and bytes per operation are not exported from it: the
// instrumented store below the scheduler (Store) already counts them as
// zerofs_store_requests_total and zerofs_store_bytes_total, per request
// that reached the store, hedges included.
func (m *Metrics) WatchSched(name string, s *sched.Store) {
	m.reg.MustRegister(&schedCollector{name: name, s: s})
}

var (
	descSchedInFlight = prometheus.NewDesc("zerofs_store_inflight",
		"Store requests in flight, by priority class (demand, readahead, background) and hedge for hedged GETs' second copies.",
		[]string{"store", "class"}, nil)
	descSchedWaiting = prometheus.NewDesc("zerofs_store_waiting",
		"Store requests waiting for a slot ([storage] max_requests), by priority class.",
		[]string{"store", "class"}, nil)
	descSchedWaits = prometheus.NewDesc("zerofs_store_waits_total",
		"Store requests that had to wait for a slot, by priority class.",
		[]string{"store", "class"}, nil)
	descSchedWaitSeconds = prometheus.NewDesc("zerofs_store_wait_seconds_total",
		"Time store requests spent waiting for a slot, by priority class.",
		[]string{"store", "class"}, nil)
	descSchedLimit = prometheus.NewDesc("zerofs_store_max_requests",
		"The limit of store requests in flight ([storage] max_requests); hedges run in a separate pool of an eighth of it.",
		[]string{"store"}, nil)
	descSchedHedges = prometheus.NewDesc("zerofs_store_hedges_total",
		"Hedged GETs: second copies of GETs that ran past the recent p99 of GETs their size.",
		[]string{"store"}, nil)
	descSchedHedgesWon = prometheus.NewDesc("zerofs_store_hedges_won_total",
		"GETs answered by their hedge rather than the first request.",
		[]string{"store"}, nil)
	descSchedHedgesSkipped = prometheus.NewDesc("zerofs_store_hedges_skipped_total",
		"GETs that ran past their hedging threshold but were not hedged: the rate cap (5% of GETs) or the hedge pool was exhausted.",
		[]string{"store"}, nil)
)

type schedCollector struct {
	name string
	s    *sched.Store
}

func (c *schedCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSchedInFlight, descSchedWaiting, descSchedWaits, descSchedWaitSeconds,
		descSchedLimit, descSchedHedges, descSchedHedgesWon, descSchedHedgesSkipped} {
		ch <- d
	}
}

func (c *schedCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{c.name}, labels...)...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, append([]string{c.name}, labels...)...)
	}
	for i, cs := range st.Classes {
		class := sched.Class(i).String()
		gauge(descSchedInFlight, float64(cs.InFlight), class)
		gauge(descSchedWaiting, float64(cs.Waiting), class)
		counter(descSchedWaits, float64(cs.Waits), class)
		counter(descSchedWaitSeconds, cs.WaitTime.Seconds(), class)
	}
	gauge(descSchedInFlight, float64(st.HedgesInFlight), "hedge")
	gauge(descSchedLimit, float64(st.Limit))
	counter(descSchedHedges, float64(st.Hedges))
	counter(descSchedHedgesWon, float64(st.HedgesWon))
	counter(descSchedHedgesSkipped, float64(st.HedgesSkipped))
}
