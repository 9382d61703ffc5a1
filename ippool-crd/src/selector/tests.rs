use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn matches(sel: &str, pairs: &[(&str, &str)]) -> bool {
    Selector::parse(sel)
        .unwrap_or_else(|e| panic!("{sel:?} should parse: {e}"))
        .matches(&labels(pairs))
}

#[test]
fn all_and_empty_match_everything() {
    assert!(matches("all()", &[]));
    assert!(matches("all( )", &[("a", "b")]));
    assert!(matches("", &[]));
    assert!(matches("   ", &[("x", "y")]));
    assert!(Selector::parse("").unwrap().is_all());
    assert_eq!(Selector::all().to_string(), "all()");
}

#[test]
fn has_and_not_has() {
    assert!(matches("has(rack)", &[("rack", "0")]));
    assert!(!matches("has(rack)", &[("zone", "0")]));
    assert!(matches("!has(rack)", &[("zone", "0")]));
    assert!(matches(
        "has( route-reflector )",
        &[("route-reflector", "")]
    ));
}

#[test]
fn equality_and_inequality() {
    assert!(matches("rack == '0'", &[("rack", "0")]));
    assert!(matches(r#"zone == "west""#, &[("zone", "west")]));
    assert!(!matches("rack == '0'", &[("rack", "1")]));
    assert!(!matches("rack == '0'", &[]));
    // != is true when the label is absent, as in Calico.
    assert!(matches("rack != '0'", &[]));
    assert!(matches("rack != '0'", &[("rack", "1")]));
    assert!(!matches("rack != '0'", &[("rack", "0")]));
}

#[test]
fn set_membership() {
    let sel = "zone in {'a', 'b'}";
    assert!(matches(sel, &[("zone", "a")]));
    assert!(!matches(sel, &[("zone", "c")]));
    assert!(!matches(sel, &[]));
    let sel = "zone not in {'a', 'b'}";
    assert!(matches(sel, &[("zone", "c")]));
    assert!(matches(sel, &[]), "not in is true when the label is absent");
    assert!(!matches(sel, &[("zone", "b")]));
    // Calico accepts an empty set and a trailing comma.
    assert!(!matches("zone in {}", &[("zone", "a")]));
    assert!(matches("zone in {'a',}", &[("zone", "a")]));
    assert!(matches("zone notin {'a'}", &[("zone", "b")]));
}

#[test]
fn string_operators() {
    assert!(matches("name contains 'ack'", &[("name", "rack-1")]));
    assert!(matches("name starts with 'rack'", &[("name", "rack-1")]));
    assert!(matches("name ends with '-1'", &[("name", "rack-1")]));
    assert!(!matches("name ends with '-2'", &[("name", "rack-1")]));
    assert!(!matches("name contains 'x'", &[]));
}

#[test]
fn boolean_operators_and_precedence() {
    let l = [("a", "1"), ("b", "2")];
    assert!(matches("a == '1' && b == '2'", &l));
    assert!(!matches("a == '1' && b == '3'", &l));
    assert!(matches("a == '9' || b == '2'", &l));
    // && binds tighter than ||.
    assert!(matches("a == '9' && b == '9' || has(a)", &l));
    assert!(!matches("a == '9' && (b == '9' || has(a))", &l));
    assert!(matches("!(a == '9')", &l));
    assert!(matches("!!has(a)", &l));
    assert!(!matches("!!!has(a)", &l));
    assert!(matches("((has(a)))", &l));
}

#[test]
fn label_names_may_contain_dots_slashes_and_dashes() {
    assert!(matches(
        "kubernetes.io/hostname == 'node-1'",
        &[("kubernetes.io/hostname", "node-1")]
    ));
    // Word operators are only operators right after a label.
    assert!(matches("in == 'x'", &[("in", "x")]));
    assert!(matches("has == 'x'", &[("has", "x")]));
}

#[test]
fn canonical_text_matches_calicos() {
    let cases = [
        ("all()", "all()"),
        ("a=='b'", r#"a == "b""#),
        ("a == 'say \"hi\"'", r#"a == 'say "hi"'"#),
        ("has(a)&&b!='c'", r#"(has(a) && b != "c")"#),
        ("a in {'z','y','z'}", r#"a in {"y", "z"}"#),
        ("!(x == 'y' || has(z))", r#"!(x == "y" || has(z))"#),
        ("k starts with 'p'", r#"k starts with "p""#),
        ("k not in {}", "k not in {}"),
    ];
    for (input, want) in cases {
        let sel = Selector::parse(input).unwrap();
        assert_eq!(sel.to_string(), want, "canonical form of {input:?}");
        // The canonical text parses back to the same selector.
        assert_eq!(Selector::parse(&sel.to_string()).unwrap(), sel);
    }
}

fn parse_err(input: &str) -> SelectorError {
    match Selector::parse(input) {
        Ok(s) => panic!("{input:?} should not parse, got {s}"),
        Err(e) => e,
    }
}

#[test]
fn unterminated_string_reports_where_it_starts() {
    let e = parse_err("rack == 'west");
    assert_eq!(e.offset, 8);
    assert_eq!(e.column, 9);
    assert!(e.message.contains("unterminated string"), "{e}");
}

#[test]
fn single_equals_is_rejected_with_position() {
    let e = parse_err("rack = 'a'");
    assert_eq!(e.column, 6);
    assert!(e.message.contains("=="), "{e}");
}

#[test]
fn missing_operator_after_label_names_the_label() {
    let e = parse_err("rack 'a'");
    assert_eq!(e.column, 6);
    assert!(e.message.contains("\"rack\""), "{e}");
}

#[test]
fn missing_value_after_operator() {
    let e = parse_err("rack ==");
    assert_eq!(e.column, 8);
    assert!(e.message.contains("quoted string"), "{e}");
    assert!(e.message.contains("end of selector"), "{e}");
}

#[test]
fn unbalanced_parentheses() {
    let e = parse_err("(has(a)");
    assert!(e.message.contains("expected ')'"), "{e}");
    assert!(e.message.contains("column 1"), "{e}");
    let e = parse_err("has(a))");
    assert_eq!(e.column, 7);
    assert!(e.message.contains("unmatched ')'"), "{e}");
}

#[test]
fn bad_set_literals() {
    let e = parse_err("a in 'x'");
    assert!(e.message.contains("'{'"), "{e}");
    let e = parse_err("a in {'x' 'y'}");
    assert_eq!(e.column, 11);
    let e = parse_err("a in {'x'");
    assert!(e.message.contains("end of selector"), "{e}");
}

#[test]
fn dangling_boolean_operators() {
    for bad in [
        "has(a) &&",
        "|| has(a)",
        "has(a) & has(b)",
        "has(a) | has(b)",
        "!",
    ] {
        let e = parse_err(bad);
        assert!(e.column >= 1, "{e}");
    }
    let e = parse_err("has(a) has(b)");
    assert_eq!(e.column, 8);
    assert!(e.message.contains("&& or ||"), "{e}");
}

#[test]
fn non_ascii_and_newlines_are_errors_not_panics() {
    let e = parse_err("zöne == 'a'");
    assert_eq!(e.column, 2);
    let e = parse_err("a == 'x'\nb");
    assert_eq!(e.column, 9);
    assert!(parse_err("é").pointer().ends_with('^'));
}

#[test]
fn overlong_label_is_rejected() {
    let sel = format!("{} == 'x'", "a".repeat(lexer::MAX_LABEL_LEN + 1));
    assert!(parse_err(&sel).message.contains("limit"));
    let ok = format!("{} == 'x'", "a".repeat(lexer::MAX_LABEL_LEN));
    assert!(Selector::parse(&ok).is_ok());
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let deep = format!("{}has(a){}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(parse_err(&deep).message.contains("nest"));
    let ok = format!("{}has(a){}", "(".repeat(20), ")".repeat(20));
    assert!(Selector::parse(&ok).is_ok());
    let nots = format!("{}has(a)", "!".repeat(100_001));
    assert!(
        !Selector::parse(&nots)
            .unwrap()
            .matches(&labels(&[("a", "")]))
    );
}

#[test]
fn global_is_parsed_and_detected() {
    let s = Selector::parse("global() && has(a)").unwrap();
    assert!(s.uses_global());
    assert!(!Selector::parse("has(a)").unwrap().uses_global());
}

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_input_never_panics_and_canonical_form_is_stable() {
    const PIECES: &[&str] = &[
        "a",
        "b.c/d-e",
        "has(",
        "has(a)",
        "all()",
        "global()",
        "(",
        ")",
        "!",
        "!=",
        "==",
        "=",
        "&&",
        "||",
        "&",
        "|",
        " ",
        "\t",
        "'x'",
        "\"y\"",
        "'",
        "\"",
        "in",
        "not in",
        "notin",
        "{",
        "}",
        ",",
        "contains",
        "starts with",
        "ends with",
        "é",
        "\n",
        "\0",
        "0",
        "_",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let lbls = labels(&[("a", "x"), ("b.c/d-e", "y")]);
    let mut parsed = 0;
    for _ in 0..20_000 {
        let n = rng.below(12);
        let mut s = String::new();
        for _ in 0..n {
            if rng.below(8) == 0 {
                // Arbitrary unicode scalar, including control characters.
                let c = char::from_u32((rng.next() % 0x11_0000) as u32).unwrap_or('?');
                s.push(c);
            } else {
                s.push_str(PIECES[rng.below(PIECES.len())]);
            }
        }
        match Selector::parse(&s) {
            Ok(sel) => {
                parsed += 1;
                let canon = sel.to_string();
                let again = Selector::parse(&canon)
                    .unwrap_or_else(|e| panic!("canonical {canon:?} of {s:?} must parse: {e}"));
                assert_eq!(again, sel, "canonical form of {s:?} changed meaning");
                assert_eq!(again.matches(&lbls), sel.matches(&lbls));
            }
            Err(e) => {
                assert!(e.offset <= s.len());
                assert!(e.column >= 1 && e.column <= s.chars().count() + 1, "{e:?}");
                let _ = e.pointer();
            }
        }
    }
    assert!(
        parsed > 100,
        "fuzzer should produce some valid selectors, got {parsed}"
    );
}
