//! Small helpers shared by the node's HTTP clients (PCCS, TON Center).

/// A reqwest error with its causes (connection refused, DNS failure, timeout, certificate
/// problem, …), each cause once.
pub(crate) fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}
