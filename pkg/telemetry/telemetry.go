// Package telemetry is tenantprov's OpenTelemetry tracing: the exporter
// set up from the standard OTEL_* variables, and the W3C trace context
// (traceparent, tracestate) carried in NATS headers and in registry
// records, so that one tenant's saga — request, commands, the agents'
// store calls, results, sealing, audit — is one trace.
//
// Tracing is off unless configured: with no OTLP endpoint and no
// OTEL_TRACES_EXPORTER the global tracer provider stays OpenTelemetry's
// no-op one and spans cost next to nothing. A trace context that arrives
// in a message is still passed on, so a caller's trace is not cut by a
// service that does not export.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Environment variables read by Setup (all standard OpenTelemetry ones; the
// exporters and the SDK read the rest themselves: OTEL_EXPORTER_OTLP_HEADERS,
// _TIMEOUT, _INSECURE, _CERTIFICATE, OTEL_TRACES_SAMPLER, OTEL_BSP_*,
// OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES).
const (
	EnvSDKDisabled         = "OTEL_SDK_DISABLED"
	EnvTracesExporter      = "OTEL_TRACES_EXPORTER"
	EnvEndpoint            = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvTracesEndpoint      = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	EnvProtocol            = "OTEL_EXPORTER_OTLP_PROTOCOL"
	EnvTracesProtocol      = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	protocolGRPC           = "grpc"
	protocolHTTPProtobuf   = "http/protobuf"
	defaultShutdownTimeout = 5 * time.Second
)

// Settings is what Setup decided from the environment.
type Settings struct {
	// Enabled is whether spans are recorded and exported.
	Enabled bool
	// Protocol is "grpc" or "http/protobuf" when Enabled.
	Protocol string
}

// FromEnv reads the OTEL_* variables through getenv (os.Getenv in
// production). Exporting is on when OTEL_TRACES_EXPORTER is "otlp", or
// when it is unset and an OTLP endpoint is set; "none", an unset
// configuration or OTEL_SDK_DISABLED=true leave it off. Any other exporter
// name, or protocol, is an error.
func FromEnv(getenv func(string) string) (Settings, error) {
	if strings.EqualFold(strings.TrimSpace(getenv(EnvSDKDisabled)), "true") {
		return Settings{}, nil
	}
	var s Settings
	switch exp := strings.ToLower(strings.TrimSpace(getenv(EnvTracesExporter))); exp {
	case "":
		s.Enabled = getenv(EnvEndpoint) != "" || getenv(EnvTracesEndpoint) != ""
	case "none":
		return Settings{}, nil
	case "otlp":
		s.Enabled = true
	default:
		return Settings{}, fmt.Errorf("%s=%q: only \"otlp\" and \"none\" are supported", EnvTracesExporter, exp)
	}
	if !s.Enabled {
		return s, nil
	}
	proto := strings.TrimSpace(getenv(EnvTracesProtocol))
	if proto == "" {
		proto = strings.TrimSpace(getenv(EnvProtocol))
	}
	switch proto {
	case "", protocolHTTPProtobuf:
		s.Protocol = protocolHTTPProtobuf
	case protocolGRPC:
		s.Protocol = protocolGRPC
	default:
		return Settings{}, fmt.Errorf("%s=%q: use \"grpc\" or \"http/protobuf\"", EnvProtocol, proto)
	}
	return s, nil
}

// Setup configures tracing for service from the environment (FromEnv): it
// always installs the W3C trace-context propagator, and, when exporting is
// on, a tracer provider that batches spans to the OTLP endpoint. The
// returned stop flushes and shuts the exporter down (bounded by a few
// seconds); it is never nil.
func Setup(ctx context.Context, service string) (stop func(), err error) {
	otel.SetTextMapPropagator(Propagator)
	s, err := FromEnv(os.Getenv)
	if err != nil || !s.Enabled {
		return func() {}, err
	}
	var exp sdktrace.SpanExporter
	if s.Protocol == protocolGRPC {
		exp, err = otlptracegrpc.New(ctx)
	} else {
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return func() {}, fmt.Errorf("otlp trace exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", service)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES override
		resource.WithTelemetrySDK(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return func() {}, fmt.Errorf("trace resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), defaultShutdownTimeout)
		defer cancel()
		_ = tp.Shutdown(sctx)
	}, nil
}

// Propagator is the W3C trace-context propagator (traceparent, tracestate)
// used on every NATS message and registry record.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// Recording reports whether spans are recorded (an SDK tracer provider is
// installed, by Setup or a test), so that work done only to give a span
// its parent — a registry read — is skipped when tracing is off.
func Recording() bool {
	_, ok := otel.GetTracerProvider().(*sdktrace.TracerProvider)
	return ok
}

// Tracer is the named tracer of the global provider (no-op unless Setup,
// or a test, installed one). It is looked up on every call so that a
// provider installed later is used.
func Tracer(name string) trace.Tracer { return otel.Tracer(name) }
