//! Strategic merge patch on arbitrary pairs of JSON documents.
//!
//! Input: `[target JSON]\0[patch JSON]`; inputs that are not two JSON
//! documents are skipped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some(at) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let (Ok(mut target), Ok(patch)) = (
        serde_json::from_slice::<Value>(&data[..at]),
        serde_json::from_slice::<Value>(&data[at + 1..]),
    ) else {
        return;
    };
    let before = target.clone();
    if podnet::api::kube::strategic_merge::apply(&mut target, &patch).is_err() {
        assert_eq!(target, before, "a failed patch changed its target");
    }
});
