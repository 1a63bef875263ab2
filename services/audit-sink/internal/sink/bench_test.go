package sink

import (
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// BenchmarkChain measures events per second from the AUDIT stream into the
// chain (decode, append, commit, ack), with one and with two replicas in
// the same run, so the two figures are comparable. The events are
// published before the clock starts; each iteration is one event. Run
// with a fixed count to get a steady figure:
//
//	go test -run '^$' -bench Chain -benchtime 20000x ./internal/sink/
func BenchmarkChain(b *testing.B) {
	c := startCluster(b)
	for _, tc := range []struct{ replicas, batch int }{{1, 100}, {2, 100}, {1, 1}} {
		b.Run(fmt.Sprintf("replicas=%d/batch=%d", tc.replicas, tc.batch), func(b *testing.B) {
			db, bus := c.newDB(b), startBus(b)
			pools := make([]*pgxpool.Pool, tc.replicas)
			for i := range pools {
				pools[i] = db.open(b)
			}
			publishMany(b, bus.js, 0, b.N)
			b.ResetTimer()
			begin := time.Now()
			rs := make([]*running, tc.replicas)
			for i := range rs {
				rs[i] = startSink(b, bus, pools[i], func(o *Options, _ *Sink) { o.BatchSize = tc.batch })
			}
			written := func() int {
				n := 0
				for _, r := range rs {
					n += r.written()
				}
				return n
			}
			waitFor(b, 5*time.Minute, "every event written", func() bool { return written() >= b.N })
			elapsed := time.Since(begin)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
			verify(b, pools[0], b.N)
		})
	}
}
