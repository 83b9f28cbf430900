//! The tutorial's tasks against plain counts: widths, row blocks, bounds, and normalizing.

use super::*;
use proptest::prelude::*;

fn naive_counts(values: &[i64], cols: usize, min: i64, max: i64) -> Vec<u32> {
    values.chunks(cols).map(|row| row.iter().filter(|&&v| v >= min && v <= max).count() as u32).collect()
}

#[test]
fn a_view_encodes_exactly_as_the_block_it_views() {
    let block = RowBlock::new(2, 3, &[1, 2, 3, 4, 5, 6]);
    let view = RowBlockView::new(2, 3, Width::One, &[1, 2, 3, 4, 5, 6]);
    let task = CountInRange { min: 1, max: 2 };
    let (mut owned, mut viewed) = (Vec::new(), Vec::new());
    corepool::task::encode_payload(&task, &block, &mut owned).unwrap();
    corepool::task::codec::encode_into(&(&task, view), &mut viewed).unwrap();
    assert_eq!(owned, viewed);
}

#[test]
fn picks_the_narrowest_width() {
    assert_eq!(RowBlock::new(1, 3, &[0, 9, -128]).width(), Width::One);
    assert_eq!(RowBlock::new(1, 2, &[0, 128]).width(), Width::Two);
    assert_eq!(RowBlock::new(1, 1, &[-40_000]).width(), Width::Four);
    assert_eq!(RowBlock::new(1, 2, &[i64::MIN, i64::MAX]).width(), Width::Eight);
}

#[test]
fn counts_the_tutorial_example() {
    let block = RowBlock::new(2, 5, &[1, 4, 8, 9, 5, 4, 4, 4, 4, 4]);
    assert_eq!(CountInRange { min: 4, max: 8 }.run(block).unwrap(), [3, 5]);
}

#[test]
fn zero_columns_count_zero_per_row() {
    assert_eq!(RowBlock::new(3, 0, &[]).count_in_range(0, 1).unwrap(), [0, 0, 0]);
}

#[test]
fn malformed_block_is_an_error_not_a_panic() {
    let mut block = RowBlock::new(2, 2, &[1, 2, 3, 4]);
    block.rows = u64::MAX;
    assert!(block.count_in_range(0, 9).is_err());
    assert!(block.to_values().is_err());
}

#[test]
fn normalizes_rows_and_constant_rows() {
    let block = RowBlock::new(2, 3, &[2, 4, 6, 7, 7, 7]);
    assert_eq!(NormalizeRows.run(block).unwrap(), [vec![0.0, 0.5, 1.0], vec![0.0; 3]]);
}

#[test]
fn star_counts_use_each_rows_bounds() {
    let rows = RowBlock::new(3, 3, &[1, 2, 3, 1, 2, 3, 1, 2, 3]);
    let bounds = BoundsRun::runs([(1, 2), (3, 3), (3, 3)]);
    assert_eq!(bounds.len(), 2);
    let chunk = BoundedRows { rows, bounds };
    assert_eq!(CountInRangeStar.run(chunk).unwrap(), [2, 1, 1]);
    let short = BoundedRows { rows: RowBlock::new(2, 1, &[1, 2]), bounds: BoundsRun::runs([(0, 9)]) };
    assert!(CountInRangeStar.run(short).is_err(), "bounds must cover every row");
}

proptest! {
    #[test]
    fn counts_round_trip_in_every_width(counts in proptest::collection::vec(prop_oneof![0u32..256, 0u32..70_000, any::<u32>()], 0..64)) {
        let mut bytes = Vec::new();
        encode_counts(&counts, &mut bytes);
        prop_assert_eq!(decode_counts(&bytes).unwrap(), counts);
    }

    #[test]
    fn decoding_junk_counts_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_counts(&bytes);
    }

    #[test]
    fn counts_decoded_into_a_list_follow_what_it_held_or_leave_it_alone(
        held in proptest::collection::vec(any::<u32>(), 0..8),
        bytes in prop_oneof![
            proptest::collection::vec(any::<u32>(), 0..64).prop_map(|counts| {
                let mut bytes = Vec::new();
                encode_counts(&counts, &mut bytes);
                bytes
            }),
            proptest::collection::vec(any::<u8>(), 0..64),
        ],
    ) {
        let mut counts = held.clone();
        match decode_counts(&bytes) {
            Ok(decoded) => {
                prop_assert!(decode_counts_into(&bytes, &mut counts).is_ok());
                prop_assert_eq!(counts, [held, decoded].concat());
            }
            Err(_) => {
                prop_assert!(decode_counts_into(&bytes, &mut counts).is_err());
                prop_assert_eq!(counts, held);
            }
        }
    }

    #[test]
    fn byte_rows_count_like_the_naive_loop_for_any_width_and_bounds(
        cols in 1usize..20,
        values in proptest::collection::vec(any::<i8>(), 0..200),
        min in prop_oneof![-130i64..130, any::<i64>()],
        max in prop_oneof![-130i64..130, any::<i64>()],
    ) {
        let rows = values.len() / cols;
        let wide: Vec<i64> = values[..rows * cols].iter().map(|&v| i64::from(v)).collect();
        let block = RowBlock::new(rows, cols, &wide);
        prop_assert_eq!(block.width(), Width::One);
        prop_assert_eq!(block.count_in_range(min, max).unwrap(), naive_counts(&wide, cols, min, max));
    }

    #[test]
    fn short_byte_rows_count_like_the_naive_loop_across_blocks(
        cols in 1usize..=8,
        seed in any::<u64>(),
        min in -130i64..130,
        span in 0i64..260,
    ) {
        // Over two blocks of rows and a part of a third, with every byte value.
        let rows = 2 * 2048 + 77;
        let mut state = seed | 1;
        let wide: Vec<i64> = (0..rows * cols)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                i64::from(state as i8)
            })
            .collect();
        let block = RowBlock::new(rows, cols, &wide);
        prop_assert_eq!(block.count_in_range(min, min + span).unwrap(), naive_counts(&wide, cols, min, min + span));
    }

    #[test]
    fn packing_round_trips_and_counts_match_naive(
        cols in 1usize..8,
        values in proptest::collection::vec(prop_oneof![-200i64..200, any::<i64>(), -70_000i64..70_000], 0..64),
        min in prop_oneof![-300i64..300, any::<i64>().prop_map(|v| v / 2)],
        span in prop_oneof![0i64..300, 0i64..i64::MAX / 2],
    ) {
        let rows = values.len() / cols;
        let values = &values[..rows * cols];
        let block = RowBlock::new(rows, cols, values);
        prop_assert_eq!(block.to_values().unwrap(), values);
        if values.iter().all(|&v| i16::try_from(v).is_ok()) {
            let narrow: Vec<i16> = values.iter().map(|&v| v as i16).collect();
            prop_assert_eq!(RowBlock::from_i16(rows, cols, &narrow).to_values().unwrap(), values);
            let wide: Vec<i32> = values.iter().map(|&v| v as i32).collect();
            prop_assert_eq!(RowBlock::from_i32(rows, cols, &wide).to_values().unwrap(), values);
        }
        if values.iter().all(|&v| i8::try_from(v).is_ok()) {
            let narrow: Vec<i8> = values.iter().map(|&v| v as i8).collect();
            prop_assert_eq!(RowBlock::from_i8(rows, cols, &narrow).to_values().unwrap(), values);
        }
        prop_assert_eq!(block.count_in_range(min, min + span).unwrap(), naive_counts(values, cols, min, min + span));
    }
}
