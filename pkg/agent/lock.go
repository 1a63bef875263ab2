package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// errLockHeld reports that another command (on this replica or another)
// holds the tenant's lock.
var errLockHeld = errors.New("tenant lock held by another command")

// errLockLost is the cause a command's context is cancelled with when its
// lock can no longer be guaranteed (a refresh was refused, or none
// succeeded in time): another replica may take the lock soon, so the store
// work must stop.
var errLockLost = errors.New("tenant lock lost")

// locker grants one holder at a time per key, across every replica of an
// agent. try makes one attempt; it returns errLockHeld (wrapped) when the
// key is taken.
type locker interface {
	try(ctx context.Context, key string, value []byte) (lease, error)
}

// lease is a held lock.
type lease interface {
	// lost is closed when the lock can no longer be guaranteed; the
	// holder must stop its work.
	lost() <-chan struct{}
	// release gives the lock up (best effort: if that fails, it expires).
	release(ctx context.Context)
}

// kvLocker keeps locks in the KV bucket events.KVAgentLocks: a lock is the
// key's creation (KV Create, a compare-and-set on "no value"), kept alive by
// updates on its revision every ttl/3 and released by a delete on its
// revision. The bucket expires every entry ttl after its last write
// (events.AgentLockTTL), so the lock of a holder that died frees itself.
type kvLocker struct {
	kv  jetstream.KeyValue
	ttl time.Duration
	log *zap.Logger
}

// lockMargin is how long before the bucket would expire a lock its holder
// already treats it as lost: the holder's clock starts before the server
// stamps the write, and the work needs a moment to stop.
func lockMargin(ttl time.Duration) time.Duration { return ttl / 5 }

func (l *kvLocker) try(ctx context.Context, key string, value []byte) (lease, error) {
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	rev, err := l.kv.Create(cctx, key, value)
	if err != nil && lockConflict(err) {
		// An earlier attempt of this same call may have been written
		// although its answer was lost (a timeout during a leader
		// election): value is unique to the call, so an entry holding
		// exactly it is ours. Take it over by updating its revision.
		if e, gerr := l.kv.Get(cctx, key); gerr == nil && bytes.Equal(e.Value(), value) {
			start = time.Now()
			rev, err = l.kv.Update(cctx, key, value, e.Revision())
		}
	}
	if err != nil {
		if lockConflict(err) {
			return nil, fmt.Errorf("%w: %s", errLockHeld, key)
		}
		return nil, fmt.Errorf("take lock %s: %w", key, err)
	}
	k := &kvLease{
		kv: l.kv, log: l.log, key: key, value: value, ttl: l.ttl, rev: rev,
		validUntil: start.Add(l.ttl - lockMargin(l.ttl)),
		lostCh:     make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{}),
	}
	go k.keep()
	return k, nil
}

// lockConflict reports whether err is a compare-and-set conflict on the
// key: code 10071 on one server, 10164 on a replicated bucket.
func lockConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

type kvLease struct {
	kv    jetstream.KeyValue
	log   *zap.Logger
	key   string
	value []byte
	ttl   time.Duration

	// Owned by keep until done is closed.
	rev        uint64
	validUntil time.Time

	lostOnce sync.Once
	lostCh   chan struct{}
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

func (k *kvLease) lost() <-chan struct{} { return k.lostCh }

func (k *kvLease) markLost(why string, err error) {
	k.lostOnce.Do(func() {
		fields := []zap.Field{zap.String("lock", k.key), zap.String("why", why)}
		if err != nil {
			fields = append(fields, zap.String("error", SanitizeText(err.Error())))
		}
		k.log.Warn("tenant lock lost; stopping the command", fields...)
		close(k.lostCh)
	})
}

// keep refreshes the lock every ttl/3 until release, and declares it lost
// when a refresh is refused or none has succeeded by validUntil.
func (k *kvLease) keep() {
	defer close(k.done)
	every := k.ttl / 3
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		left := time.Until(k.validUntil)
		if left <= 0 {
			k.markLost("no refresh succeeded in time", nil)
			return
		}
		t.Reset(min(every, left))
		select {
		case <-k.stop:
			return
		case <-t.C:
		}
		start := time.Now()
		left = k.validUntil.Sub(start)
		if left <= 0 {
			k.markLost("no refresh succeeded in time", nil)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), min(left, publishTimeout))
		rev, err := k.kv.Update(ctx, k.key, k.value, k.rev)
		cancel()
		switch {
		case err == nil:
			k.rev = rev
			k.validUntil = start.Add(k.ttl - lockMargin(k.ttl))
		case lockConflict(err):
			k.markLost("refresh refused: the lock expired and was taken or removed", err)
			return
		default:
			k.log.Debug("tenant lock refresh failed; retrying", zap.String("lock", k.key), zap.String("error", SanitizeText(err.Error())))
			every = min(every, time.Second) // retry sooner while it fails
		}
	}
}

func (k *kvLease) release(ctx context.Context) {
	k.stopOnce.Do(func() { close(k.stop) })
	<-k.done
	select {
	case <-k.lostCh:
		return // not ours any more: never delete another holder's lock
	default:
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	if err := k.kv.Delete(dctx, k.key, jetstream.LastRevision(k.rev)); err != nil {
		k.log.Debug("tenant lock not released; it expires on its own",
			zap.String("lock", k.key), zap.String("error", SanitizeText(err.Error())))
	}
}

// openLocker binds the lock bucket, retrying until ctx is done (the bucket
// is created by events.Topology.Ensure; NATS may still be electing its
// leader).
func (r *runtime) openLocker(ctx context.Context) (locker, error) {
	backoff := 250 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		kv, err := r.js.KeyValue(cctx, events.KVAgentLocks)
		var ttl time.Duration
		if err == nil {
			var st jetstream.KeyValueStatus
			if st, err = kv.Status(cctx); err == nil {
				ttl = st.TTL()
				if ttl <= 0 {
					err = fmt.Errorf("bucket %s has no TTL: a dead holder's lock would never expire", events.KVAgentLocks)
				}
			}
		}
		cancel()
		if err == nil {
			return &kvLocker{kv: kv, ttl: ttl, log: r.log}, nil
		}
		r.log.Warn("cannot open the tenant lock bucket; retrying",
			zap.String("bucket", events.KVAgentLocks), zap.String("error", SanitizeText(err.Error())), zap.Duration("in", backoff))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("open kv %s: %w", events.KVAgentLocks, errors.Join(ctx.Err(), err))
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}
