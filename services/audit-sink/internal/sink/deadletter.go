package sink

import (
	"context"
	"errors"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantprov/tenantprov/pkg/auditlog"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// Headers of a dead-lettered audit message. The body is the original
// payload, byte for byte.
const (
	// HeaderDeadLetterReason is one of the Reason* values (also the
	// metric's label).
	HeaderDeadLetterReason = "Tenantprov-Dead-Letter-Reason"
	// HeaderDeadLetterError is the error, for people (at most 1 KiB).
	HeaderDeadLetterError = "Tenantprov-Dead-Letter-Error"
	// HeaderDeadLetterSubject is the subject the message arrived on.
	HeaderDeadLetterSubject = "Tenantprov-Dead-Letter-Subject"
	// HeaderDeadLetterStream and HeaderDeadLetterStreamSeq locate the
	// original in its stream.
	HeaderDeadLetterStream    = "Tenantprov-Dead-Letter-Stream"
	HeaderDeadLetterStreamSeq = "Tenantprov-Dead-Letter-Stream-Seq"
)

// Dead-letter reasons.
const (
	// ReasonMalformed: not a JSON object, or not JSON at all.
	ReasonMalformed = "malformed"
	// ReasonInvalid: a JSON object that breaks the audit event contract
	// (a required field missing, a field with an invalid value).
	ReasonInvalid = "invalid"
	// ReasonTooLarge: over events.MaxPayloadBytes.
	ReasonTooLarge = "too_large"
	// ReasonUnstorable: valid, but cannot be stored faithfully
	// (auditlog.ErrUnstorable: NUL characters, out-of-range numbers).
	ReasonUnstorable = "unstorable"
	// ReasonRejected: PostgreSQL refused the row itself (a data error);
	// retrying could never succeed.
	ReasonRejected = "rejected_by_database"
)

// Reasons lists every dead-letter reason.
func Reasons() []string {
	return []string{ReasonMalformed, ReasonInvalid, ReasonTooLarge, ReasonUnstorable, ReasonRejected}
}

// deadLetterSource names this consumer in deadletter.<source>.
const deadLetterSource = "audit"

// reasonFor classifies a decode or prepare error.
func reasonFor(err error) string {
	var pe *events.PayloadError
	switch {
	case errors.Is(err, events.ErrPayloadTooLarge):
		return ReasonTooLarge
	case errors.Is(err, auditlog.ErrUnstorable):
		return ReasonUnstorable
	case errors.As(err, &pe) && pe.Field == "":
		return ReasonMalformed
	default:
		return ReasonInvalid
	}
}

// deadLetter stores m on deadletter.audit with the reason, then terminates
// m so it is never redelivered. The publish is de-duplicated on the
// original's stream sequence, so a retry after a failed Term stores one
// copy. If the publish fails, m is nak'ed and comes back later: nothing is
// lost, and the rest of the stream keeps flowing meanwhile.
func (s *Sink) deadLetter(ctx context.Context, m jetstream.Msg, reason string, cause error) {
	out := nats.NewMsg(events.DeadLetterSubject(deadLetterSource))
	out.Data = m.Data()
	out.Header.Set(HeaderDeadLetterReason, reason)
	out.Header.Set(HeaderDeadLetterError, events.Truncate(cause.Error(), 1024))
	out.Header.Set(HeaderDeadLetterSubject, m.Subject())
	if meta, err := m.Metadata(); err == nil {
		seq := strconv.FormatUint(meta.Sequence.Stream, 10)
		out.Header.Set(HeaderDeadLetterStream, meta.Stream)
		out.Header.Set(HeaderDeadLetterStreamSeq, seq)
		out.Header.Set(events.HeaderMsgID, "deadletter:"+deadLetterSource+":"+meta.Stream+":"+seq)
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.PublishTimeout)
	defer cancel()
	if _, err := s.opts.JS.PublishMsg(pctx, out); err != nil {
		s.log.Warn("dead-letter publish failed; message will be redelivered",
			zapSubject(m), zapReason(reason), zapErr(err))
		_ = m.NakWithDelay(s.opts.RetryDelay)
		return
	}
	s.metrics.DeadLetters.WithLabelValues(reason).Inc()
	s.log.Warn("audit message dead-lettered", zapSubject(m), zapReason(reason), zapErr(cause))
	if err := m.TermWithReason(reason); err != nil {
		s.log.Warn("terminate dead-lettered message", zapSubject(m), zapErr(err))
	}
}
