package redisstore

import (
	"context"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ScriptKill is what the script watchdog did about one script that kept the
// server busy.
type ScriptKill struct {
	// BusyFor is how long the watchdog had seen the server answer BUSY.
	BusyFor time.Duration
	// Killed is true when SCRIPT KILL stopped the script.
	Killed bool
	// Err is why it did not: the script had written (UNKILLABLE — only
	// SHUTDOWN NOSAVE or waiting ends it, and an operator must decide), or
	// SCRIPT KILL failed. Nil when Killed, or when the script ended on its
	// own before the kill.
	Err error
}

// WatchScripts is the Lua watchdog for the readonly and allow stances (see
// Scripting); it returns at once under the deny stance. Until ctx ends it
// sends PING as the admin every ScriptWatchdogInterval; Redis answers BUSY
// once a script has run longer than busy-reply-threshold, and when that has
// lasted ScriptKillAfter the watchdog runs SCRIPT KILL and calls report.
// An UNKILLABLE script (it wrote before looping) is reported once per busy
// spell, not killed. It kills whichever script keeps the server busy, a
// tenant's or not. Several agent replicas may each run one: a second SCRIPT
// KILL finds nothing to kill.
//
// The admin user needs +script|kill (and +ping) for it.
func (s *Store) WatchScripts(ctx context.Context, report func(ScriptKill)) error {
	if !s.cfg.TenantScripting.scriptsAllowed() {
		return nil
	}
	interval := s.cfg.ScriptWatchdogInterval
	if interval <= 0 {
		interval = DefaultScriptWatchdogInterval
	}
	killAfter := s.cfg.ScriptKillAfter
	if killAfter <= 0 {
		killAfter = DefaultScriptKillAfter
	}
	// Its own connection: the admin pool may be busy with commands that the
	// stalled server answers late.
	opts, err := s.options(s.cfg.AdminUser, s.cfg.AdminPassword)
	if err != nil {
		return err
	}
	opts.PoolSize = 1
	opts.MaxRetries = -1
	c := redis.NewClient(opts)
	defer c.Close()

	tick := time.NewTicker(interval)
	defer tick.Stop()
	var busySince time.Time
	reported := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		pctx, cancel := context.WithTimeout(ctx, max(interval, time.Second))
		err := c.Ping(pctx).Err()
		cancel()
		if !isBusy(err) {
			busySince, reported = time.Time{}, false
			continue
		}
		now := time.Now()
		if busySince.IsZero() {
			busySince = now
		}
		if now.Sub(busySince) < killAfter || reported {
			continue
		}
		kctx, cancel := context.WithTimeout(ctx, max(interval, time.Second))
		err = c.Do(kctx, "SCRIPT", "KILL").Err()
		cancel()
		k := ScriptKill{BusyFor: now.Sub(busySince)}
		switch {
		case err == nil:
			k.Killed = true
			busySince = time.Time{}
		case redis.HasErrorPrefix(err, "NOTBUSY"):
			// It ended on its own, or another replica killed it.
			busySince = time.Time{}
			continue
		default:
			k.Err = storeError("script kill", err)
			// UNKILLABLE stays so until the script ends: say it once.
			reported = redis.HasErrorPrefix(err, "UNKILLABLE")
		}
		if report != nil {
			report(k)
		}
	}
}

// isBusy reports whether err is Redis's BUSY reply (a script has run past
// busy-reply-threshold).
func isBusy(err error) bool {
	return err != nil && isRedisReply(err) && strings.HasPrefix(err.Error(), "BUSY")
}
