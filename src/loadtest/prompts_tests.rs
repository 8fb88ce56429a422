//! Unit tests of `loadtest/prompts.rs`.

use super::*;

fn text(t: &str) -> PromptItem {
    PromptItem { prompt: Prompt::Text(t.into()), max_tokens: None }
}

#[test]
fn shared_prefixes_are_identical_within_a_group_and_meet_every_prompt() {
    let prefixes = workload::shared_prefixes(20, 2, 1);
    let items = with_shared_prefixes(vec![text("a"), text("b"), text("c")], &prefixes);
    assert_eq!(items.len(), 6);
    let sys = |i: usize| items[i].prompt.as_messages()[0].content.clone();
    assert_eq!(sys(0), sys(2));
    assert_eq!(sys(0), sys(4));
    assert_eq!(sys(1), sys(3));
    assert_ne!(sys(0), sys(1));
    let users: std::collections::BTreeSet<_> = items.iter().map(|i| i.prompt.as_messages()[1].content.clone()).collect();
    assert_eq!(users.len(), 3);
}

#[test]
fn output_lengths_are_seeded_and_spread() {
    let a = with_output_lengths(vec![text("a")], InputTokens { mean: 100, stddev: 20 }, Some(50), 3);
    let b = with_output_lengths(vec![text("a")], InputTokens { mean: 100, stddev: 20 }, Some(50), 3);
    assert_eq!(a, b);
    assert_eq!(a.len(), 50);
    let lens: Vec<u32> = a.iter().map(|i| i.max_tokens.unwrap()).collect();
    let mean = lens.iter().sum::<u32>() as f64 / 50.0;
    assert!((85.0..115.0).contains(&mean), "{mean}");
    assert!(lens.iter().any(|&l| l != lens[0]));
    let fixed = with_output_lengths(vec![text("a")], InputTokens { mean: 7, stddev: 0 }, Some(3), 0);
    assert!(fixed.iter().all(|i| i.max_tokens == Some(7)));
}
