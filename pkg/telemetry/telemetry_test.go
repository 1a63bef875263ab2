package telemetry

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		want    Settings
		wantErr string
	}{
		{name: "off by default", env: nil, want: Settings{}},
		{name: "endpoint turns otlp on (http/protobuf)", env: map[string]string{EnvEndpoint: "http://collector:4318"}, want: Settings{Enabled: true, Protocol: "http/protobuf"}},
		{name: "traces endpoint", env: map[string]string{EnvTracesEndpoint: "http://collector:4318/v1/traces"}, want: Settings{Enabled: true, Protocol: "http/protobuf"}},
		{name: "exporter otlp grpc", env: map[string]string{EnvTracesExporter: "otlp", EnvProtocol: "grpc"}, want: Settings{Enabled: true, Protocol: "grpc"}},
		{name: "traces protocol wins", env: map[string]string{EnvTracesExporter: "otlp", EnvProtocol: "grpc", EnvTracesProtocol: "http/protobuf"}, want: Settings{Enabled: true, Protocol: "http/protobuf"}},
		{name: "exporter none beats endpoint", env: map[string]string{EnvTracesExporter: "none", EnvEndpoint: "http://collector:4318"}, want: Settings{}},
		{name: "sdk disabled", env: map[string]string{EnvSDKDisabled: "true", EnvTracesExporter: "otlp"}, want: Settings{}},
		{name: "unknown exporter", env: map[string]string{EnvTracesExporter: "zipkin"}, wantErr: "OTEL_TRACES_EXPORTER"},
		{name: "unknown protocol", env: map[string]string{EnvEndpoint: "x", EnvProtocol: "http/json"}, wantErr: "OTEL_EXPORTER_OTLP_PROTOCOL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FromEnv(func(k string) string { return tc.env[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("FromEnv = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestSetupOffByDefault(t *testing.T) {
	for _, k := range []string{EnvSDKDisabled, EnvTracesExporter, EnvEndpoint, EnvTracesEndpoint, EnvProtocol, EnvTracesProtocol} {
		t.Setenv(k, "")
	}
	stop, err := Setup(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	_, span := Tracer("test").Start(context.Background(), "x")
	defer span.End()
	if span.IsRecording() || Recording() {
		t.Fatal("a span records with no exporter configured")
	}
}

// A trace context survives the trip through NATS headers and through a
// saved record, and the child spans started from it belong to its trace.
func TestContextTravels(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ctx, root := tp.Tracer("t").Start(context.Background(), "root")
	h := nats.Header{}
	Inject(ctx, h)
	if h.Get(HeaderTraceparent) == "" || !Carried(h) {
		t.Fatalf("no traceparent injected: %v", h)
	}
	if Carried(nats.Header{}) || Carried(nil) {
		t.Fatal("an empty header claims a trace context")
	}
	saved := Save(Extract(context.Background(), h))
	if saved[HeaderTraceparent] != h.Get(HeaderTraceparent) {
		t.Fatalf("saved %v, header %v", saved, h)
	}
	if Save(context.Background()) != nil {
		t.Fatal("Save of a context without a span is not nil")
	}
	_, child := tp.Tracer("t").Start(Restore(context.Background(), saved), "child")
	child.End()
	root.End()
	spans := exp.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("%d spans", len(spans))
	}
	c, r := spans[0], spans[1]
	if c.Parent.SpanID() != r.SpanContext.SpanID() || c.SpanContext.TraceID() != r.SpanContext.TraceID() {
		t.Fatalf("child %s is not under root %s", c.Parent.SpanID(), r.SpanContext.SpanID())
	}
	f := LogFields(trace.ContextWithSpanContext(context.Background(), r.SpanContext))
	if len(f) == 0 || f[0].Key != "trace_id" || f[0].String != r.SpanContext.TraceID().String() {
		t.Fatalf("log fields %v", f)
	}
	if LogFields(context.Background()) != nil {
		t.Fatal("log fields without a span")
	}
}

// An OTLP endpoint turns recording on, for either protocol; stop shuts the
// exporter down (nothing is listening: nothing was exported).
func TestSetupOTLP(t *testing.T) {
	for _, proto := range []string{"http/protobuf", "grpc"} {
		t.Run(proto, func(t *testing.T) {
			t.Setenv(EnvTracesExporter, "")
			t.Setenv(EnvSDKDisabled, "")
			t.Setenv(EnvEndpoint, "http://127.0.0.1:1")
			t.Setenv(EnvProtocol, proto)
			prev := otel.GetTracerProvider()
			defer otel.SetTracerProvider(prev)
			stop, err := Setup(context.Background(), "test")
			if err != nil {
				t.Fatal(err)
			}
			if !Recording() {
				t.Fatal("OTEL_EXPORTER_OTLP_ENDPOINT set, but spans are not recorded")
			}
			_, span := Tracer("test").Start(context.Background(), "x")
			if !span.IsRecording() {
				t.Fatal("span not recording")
			}
			stop()
		})
	}
}

// Save keeps a short tracestate and drops a long one, so that a caller's
// tracestate cannot bloat a registry record.
func TestSaveBoundsTracestate(t *testing.T) {
	parent := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, tc := range []struct {
		state string
		kept  bool
	}{{"vendor=abc", true}, {"v=" + strings.Repeat("a", 250) + ",w=" + strings.Repeat("b", 250) + ",x=" + strings.Repeat("c", 100), false}} {
		h := nats.Header{}
		h.Set(HeaderTraceparent, parent)
		h.Set(HeaderTracestate, tc.state)
		ctx := Extract(context.Background(), h)
		if got := trace.SpanContextFromContext(ctx).TraceState().String(); got != tc.state {
			t.Fatalf("tracestate extracted as %q", got)
		}
		saved := Save(ctx)
		if saved[HeaderTraceparent] != parent {
			t.Fatalf("traceparent %q, want %q", saved[HeaderTraceparent], parent)
		}
		if _, ok := saved[HeaderTracestate]; ok != tc.kept {
			t.Errorf("tracestate of %d bytes kept=%v, want %v", len(tc.state), ok, tc.kept)
		}
	}
}
