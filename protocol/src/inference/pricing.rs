//! What a request costs: prices are per 1,000 tokens in nanotons, prompt and completion priced
//! separately (as attested in the worker's offer); the amount is rounded up to whole nanotons.

use super::receipt::Usage;

/// Amount due for `usage` at the given prices: ⌈(prompt·p + completion·c) / 1000⌉ nanotons.
/// Saturates at `u64::MAX` rather than wrapping.
pub fn amount_due(price_prompt_per_1k: u64, price_completion_per_1k: u64, usage: Usage) -> u64 {
    let total = u128::from(usage.prompt_tokens) * u128::from(price_prompt_per_1k)
        + u128::from(usage.completion_tokens) * u128::from(price_completion_per_1k);
    u64::try_from(total.div_ceil(1000)).unwrap_or(u64::MAX)
}

/// The most a request can cost: its prompt plus `max_tokens` generated tokens.
pub fn worst_case(
    price_prompt_per_1k: u64,
    price_completion_per_1k: u64,
    prompt_tokens: u32,
    max_tokens: u32,
) -> u64 {
    amount_due(
        price_prompt_per_1k,
        price_completion_per_1k,
        Usage { prompt_tokens, completion_tokens: max_tokens },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_round_up_and_saturate() {
        let u = |p, c| Usage { prompt_tokens: p, completion_tokens: c };
        assert_eq!(amount_due(1000, 2000, u(0, 0)), 0);
        assert_eq!(amount_due(1000, 2000, u(1, 0)), 1);
        assert_eq!(amount_due(1, 1, u(1, 0)), 1, "a fraction of a nanoton rounds up");
        assert_eq!(amount_due(1000, 2000, u(10, 20)), 50);
        assert_eq!(amount_due(u64::MAX, u64::MAX, u(u32::MAX, u32::MAX)), u64::MAX);
        assert_eq!(worst_case(1000, 2000, 10, 20), 50);
    }
}
