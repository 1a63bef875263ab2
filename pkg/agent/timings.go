package agent

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// stepTimings adds to a result's per-step timings what the runtime itself
// spent before the store was called: the command's time in its stream
// (stored → this lock attempt began, which includes the decoding) and the
// wait for the tenant's lock.
func stepTimings(ms map[string]float64, msg jetstream.Msg, lockStart time.Time, lockWait time.Duration) map[string]float64 {
	if ms == nil {
		ms = map[string]float64{}
	}
	if md, err := msg.Metadata(); err == nil && !md.Timestamp.IsZero() {
		ms[events.StepQueue] = events.RoundMS(max(lockStart.Sub(md.Timestamp), 0))
	}
	ms[events.StepLock] = events.RoundMS(lockWait)
	return ms
}
