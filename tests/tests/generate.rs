//! `corepool gen` writes the seeded matrix that `count` uses, as CSV and `.npy`.

use corepool_tests::{expected_counts, read_counts, run_corepool};
use corepool_tutorial::Matrix;

#[test]
fn gen_csv_holds_the_generators_matrix_and_counts_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("m.csv");
    run_corepool(dir.path(), &["gen", "--rows", "777", "--cols", "4", "--seed", "5", "--output", "m.csv"], &[])
        .assert_success();
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<Vec<i64>> = text.lines().map(|line| line.split(',').map(|v| v.parse().unwrap()).collect()).collect();
    let matrix = Matrix::random(777, 4, 0, 10, 5);
    assert_eq!(rows.concat(), matrix.to_i64());

    let out = dir.path().join("counts.txt");
    let args = ["count", "--input", "m.csv", "--mode", "imap", "--output", out.to_str().unwrap()];
    run_corepool(dir.path(), &args, &[]).assert_success();
    assert_eq!(read_counts(&out), expected_counts(&rows, 4, 8));
}

#[test]
fn gen_npy_is_a_2d_c_order_array_of_the_asked_dtype() {
    let dir = tempfile::tempdir().unwrap();
    for (dtype, descr) in [("int64", "<i8"), ("int32", "<i4"), ("uint8", "|u1"), ("float64", "<f8")] {
        let name = format!("m-{dtype}.npy");
        let args =
            ["gen", "--rows", "300", "--cols", "3", "--low", "0", "--high", "100", "--dtype", dtype, "--output", &name];
        run_corepool(dir.path(), &args, &[]).assert_success();
        let bytes = std::fs::read(dir.path().join(&name)).unwrap();
        let file = npyz::NpyFile::new(&bytes[..]).unwrap();
        assert_eq!(file.shape(), [300, 3]);
        assert_eq!(file.order(), npyz::Order::C);
        assert_eq!(file.dtype().descr(), format!("'{descr}'"), "{dtype}");
        let expected = Matrix::random(300, 3, 0, 100, 2019);
        match dtype {
            "int64" => assert_eq!(file.into_vec::<i64>().unwrap(), expected.to_i64()),
            "int32" => assert!(file.into_vec::<i32>().unwrap().iter().map(|&v| i64::from(v)).eq(expected.to_i64())),
            "uint8" => assert!(file.into_vec::<u8>().unwrap().iter().map(|&v| i64::from(v)).eq(expected.to_i64())),
            _ => assert!(file.into_vec::<f64>().unwrap().iter().all(|v| (0.0..100.0).contains(v))),
        }
    }
}
