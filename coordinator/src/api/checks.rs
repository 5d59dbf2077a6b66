//! What an agent's batch and each of its results may hold. A batch that breaks the protocol ends
//! the stream; a result the coordinator will not store is refused in the ack, with its reason.

use prost::Message as _;
use tonic::Status;
use vantage_proto::v1::{ResultBatch, TargetResult};
use vantage_shared::limits::{MAX_BATCH_RESULTS, MAX_ID, MAX_RESULT_BYTES, MAX_URL};

use crate::refusal::{Reason, Refusal};

/// Trace context a result may carry: `traceparent` and `tracestate`, each bounded.
const MAX_TRACE_FIELDS: usize = 2;
const MAX_TRACE_KEY: usize = 32;
const MAX_TRACE_VALUE: usize = 512;

/// The largest batch sequence accepted.
const MAX_SEQUENCE: u64 = 1 << 62;

/// Checks a batch as a whole: what breaks the protocol (an absurd sequence, too many results)
/// ends the stream. Its results are checked one by one by [`check_result`].
pub fn check_batch(batch: &ResultBatch) -> Result<(), Status> {
    // Agents count from the clock in microseconds: 2^62 is 146,000 years away. A sequence near
    // the top would leave the agent no room above it.
    if batch.sequence > MAX_SEQUENCE {
        return Err(Status::invalid_argument(format!("sequence: at most {MAX_SEQUENCE}, got {}", batch.sequence)));
    }
    if batch.results.len() > MAX_BATCH_RESULTS {
        return Err(Status::invalid_argument(format!(
            "results: a batch holds at most {MAX_BATCH_RESULTS}, got {}",
            batch.results.len()
        )));
    }
    Ok(())
}

/// Checks one result on its own. One the coordinator will not store is refused in the ack (the
/// agent drops it), never a reason to end the stream: a stream ended for a result the agent
/// resends after reconnecting would wedge that agent for good.
pub fn check_result(r: &TargetResult) -> Result<(), Refusal> {
    if r.target_url.is_empty() || r.target_url.len() > MAX_URL {
        return Err(Refusal::new(
            Reason::TargetUrl,
            format!("target_url: must be 1 to {MAX_URL} bytes, got {}", r.target_url.len()),
        ));
    }
    if r.result.is_none() {
        return Err(Refusal::new(Reason::NoResult, "result: missing"));
    }
    for (field, id) in [("run_now_id", &r.run_now_id), ("first_failure_code", &r.first_failure_code)] {
        if id.len() > MAX_ID {
            return Err(Refusal::new(Reason::Id, format!("{field}: at most {MAX_ID} bytes, got {}", id.len())));
        }
    }
    if r.trace_context.len() > MAX_TRACE_FIELDS
        || r.trace_context.iter().any(|(k, v)| k.len() > MAX_TRACE_KEY || v.len() > MAX_TRACE_VALUE)
    {
        return Err(Refusal::new(
            Reason::TraceContext,
            format!("trace_context: at most traceparent and tracestate, {MAX_TRACE_VALUE} bytes each"),
        ));
    }
    let size = r.encoded_len();
    if size > MAX_RESULT_BYTES {
        return Err(Refusal::new(
            Reason::TooLarge,
            format!("the result is {size} bytes encoded, at most {MAX_RESULT_BYTES}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use vantage_proto::v1::ProbeResult;

    use super::*;

    #[test]
    fn a_batch_ends_the_stream_only_for_its_sequence_or_size() {
        let ok = TargetResult {
            target_url: "https://a.example/".into(),
            result: Some(ProbeResult::default()),
            ..Default::default()
        };
        assert!(check_batch(&ResultBatch { sequence: 1, results: vec![ok.clone()] }).is_ok());
        // A bad result is the result's problem, not the batch's.
        assert!(check_batch(&ResultBatch { sequence: 1, results: vec![TargetResult::default()] }).is_ok());
        let far = check_batch(&ResultBatch { sequence: u64::MAX, results: vec![ok.clone()] }).unwrap_err();
        assert!(far.message().starts_with("sequence:"), "{}", far.message());
        let huge = ResultBatch { sequence: 1, results: vec![ok; MAX_BATCH_RESULTS + 1] };
        assert!(check_batch(&huge).unwrap_err().message().starts_with("results:"));
    }

    #[test]
    fn each_bad_result_is_refused_with_its_reason() {
        let ok = TargetResult {
            target_url: "https://a.example/".into(),
            result: Some(ProbeResult::default()),
            ..Default::default()
        };
        assert_eq!(check_result(&ok), Ok(()));
        let traced = [("traceparent".to_owned(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned())];
        assert_eq!(check_result(&TargetResult { trace_context: traced.into(), ..ok.clone() }), Ok(()));
        let longest = format!("https://a.example/{}", "x".repeat(MAX_URL - 18));
        assert_eq!(check_result(&TargetResult { target_url: longest.clone(), ..ok.clone() }), Ok(()));
        let mut large = ok.clone();
        large.result.as_mut().unwrap().tls_cipher = "x".repeat(MAX_RESULT_BYTES);
        let cases = [
            (TargetResult { target_url: String::new(), ..ok.clone() }, Reason::TargetUrl, "target_url:"),
            (TargetResult { target_url: format!("{longest}x"), ..ok.clone() }, Reason::TargetUrl, "target_url:"),
            (TargetResult { result: None, ..ok.clone() }, Reason::NoResult, "result: missing"),
            (TargetResult { run_now_id: "x".repeat(MAX_ID + 1), ..ok.clone() }, Reason::Id, "run_now_id:"),
            (
                TargetResult { first_failure_code: "x".repeat(MAX_ID + 1), ..ok.clone() },
                Reason::Id,
                "first_failure_code:",
            ),
            (
                TargetResult { trace_context: [("traceparent".into(), "0".repeat(513))].into(), ..ok.clone() },
                Reason::TraceContext,
                "trace_context:",
            ),
            (
                TargetResult {
                    trace_context: (0..3).map(|i| (format!("k{i}"), String::new())).collect(),
                    ..ok.clone()
                },
                Reason::TraceContext,
                "trace_context:",
            ),
            (large, Reason::TooLarge, "the result is"),
        ];
        for (bad, reason, message) in cases {
            let refusal = check_result(&bad).unwrap_err();
            assert_eq!(refusal.reason, reason, "{refusal}");
            assert!(refusal.message.starts_with(message), "{refusal}");
        }
    }
}
