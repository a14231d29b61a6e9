//! Properties of path normalisation: whatever the path, it never panics, and what it
//! gives is normal already (normalising again changes nothing), with no `//` and no dot
//! segment left for an upstream to resolve differently.

use super::{normalized_path, without_dot_segments};
use proptest::prelude::*;

/// A path made of the pieces that matter to normalisation, and any other printable byte.
fn path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/"),
        Just("."),
        Just(".."),
        Just("%2e"),
        Just("%2E"),
        Just("%2f"),
        Just("%61"),
        Just("%"),
        Just("%g1"),
        Just("a"),
        Just("~"),
    ];
    let any_char = proptest::char::range(' ', '~').prop_map(String::from);
    let pieces = prop::collection::vec(prop_oneof![piece.prop_map(String::from), any_char], 0..16);
    pieces.prop_map(|pieces| format!("/{}", pieces.concat()))
}

proptest! {
    #[test]
    fn normal_paths_stay_normal(path in path()) {
        let Ok(normal) = normalized_path(&path) else {
            return Ok(());
        };
        prop_assert_eq!(normalized_path(&normal), Ok(normal.clone()), "{}", path);
        prop_assert!(!normal.contains("//"), "{} gave {}", path, normal);
        prop_assert!(normal.starts_with('/'), "{} gave {}", path, normal);
        for segment in normal.split('/') {
            prop_assert!(segment != "." && segment != "..", "{} gave {}", path, normal);
        }
        prop_assert_eq!(without_dot_segments(&normal), normal.clone());
    }

    #[test]
    fn any_text_is_normalised_or_refused(text in any::<String>()) {
        let _ = normalized_path(&text);
        let _ = without_dot_segments(&text);
    }
}
