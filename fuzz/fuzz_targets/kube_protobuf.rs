//! The Kubernetes protobuf body decoder on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = podnet::api::kube::protobuf::decode(data);
});
