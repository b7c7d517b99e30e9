//! A task's place in a distributed trace (docs/operations.md, "Traces").
//! The span current when a task is queued (its submission's) is kept with
//! the task as a W3C `traceparent`; every later span of the task — each
//! step try, its backend and plugin calls, its effects — is made its child,
//! on whichever host runs it and however long after, so a task is one
//! trace. Spans have the target `dwa_otel`: only the OpenTelemetry layer
//! (installed when an OTLP endpoint is configured) takes them, so without
//! it they are disabled at their call site and cost nothing.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header that carries a span's context.
pub const TRACEPARENT: &str = "traceparent";

/// The `traceparent` of the current span, when an OpenTelemetry layer
/// records it.
pub fn current() -> Option<String> {
    of(&Span::current())
}

/// The `traceparent` of `span`, when an OpenTelemetry layer records it.
pub fn of(span: &Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Makes `span` (not yet entered) a child of the span `traceparent` names;
/// a malformed or absent one leaves it where it is.
pub fn adopt(span: &Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent else {
        return;
    };
    if span.is_disabled() {
        return;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), tp.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid()
        && let Err(e) = span.set_parent(cx)
    {
        tracing::debug!(error = %e, "span not joined to its task's trace");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_opentelemetry_layer_nothing_is_recorded_or_adopted() {
        let span = tracing::info_span!(target: "dwa_otel", "step");
        assert_eq!(of(&span), None);
        // A valid parent on a disabled span is a no-op, not an error.
        adopt(
            &span,
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        assert_eq!(current(), None);
    }
}
