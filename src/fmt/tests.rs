//! `bai fmt`'s tests: the lab round trip, every kind of comment kdl would lose, stability, and
//! properties over generated documents.

use super::format_source;
use kdl::KdlDocument;
use proptest::prelude::*;

const LAB: &str = r#"// A lab
cluster "lab" {
    ssh user="bai" identity="~/.ssh/id_ed25519"   // login
    probe interval="5s"   timeout="2s" failure-threshold=3
  node "gpu-01" address="10.0.0.11" {
        gpus 8 // declared
        labels rack="r1" /* the rack */ model="h100"
    }
    /- node "old" address="10.0.0.9"
    session "train-resnet" image="pytorch" node="gpu-01" {
        mount "datasets" alias="data" readonly=#true
        command "python" "train.py"
        // trailing comment in block
    }
}
"#;

const LAB_FORMATTED: &str = r#"// A lab
cluster "lab" {
    ssh user="bai" identity="~/.ssh/id_ed25519" // login
    probe interval="5s" timeout="2s" failure-threshold=3
    node "gpu-01" address="10.0.0.11" {
        gpus 8 // declared
        labels rack="r1" /* the rack */ model="h100"
    }
    /- node "old" address="10.0.0.9"
    session "train-resnet" image="pytorch" node="gpu-01" {
        mount "datasets" alias="data" readonly=#true
        command "python" "train.py"
        // trailing comment in block
    }
}
"#;

fn fmt(source: &str) -> String {
    format_source(source).expect("test input is valid KDL")
}

/// The document's data with all formatting (comments included) dropped.
fn data(source: &str) -> KdlDocument {
    fn strip(doc: &mut KdlDocument) {
        doc.clear_format_recursive();
        for node in doc.nodes_mut() {
            // `clear_format_recursive` leaves a node's type annotation.
            if let Some(ty) = node.ty_mut() {
                ty.clear_format();
            }
            if let Some(children) = node.children_mut() {
                strip(children);
            }
        }
    }
    let mut doc: KdlDocument = source.parse().expect("output parses");
    strip(&mut doc);
    doc
}

#[test]
fn lab_fixture_formats_canonically() {
    assert_eq!(fmt(LAB), LAB_FORMATTED);
}

#[test]
fn lab_fixture_is_idempotent_and_keeps_data() {
    let once = fmt(LAB);
    assert_eq!(fmt(&once), once);
    assert_eq!(data(&once), data(LAB));
}

#[test]
fn blank_lines_between_nodes_collapse_to_one() {
    let src = "a {\n\n  x\n\n\n  y // c\n\n  // about z\n  z\n\n}\n\n\nb\n";
    assert_eq!(fmt(src), "a {\n    x\n\n    y // c\n\n    // about z\n    z\n}\n\nb\n");
}

#[test]
fn own_line_comments_are_reindented() {
    let src = "  // top\nx {\n// one\n        // two\n  y\n}\n";
    assert_eq!(fmt(src), "// top\nx {\n    // one\n    // two\n    y\n}\n");
}

#[test]
fn end_of_line_comment_after_node() {
    assert_eq!(fmt("a 1   // note\nb\n"), "a 1 // note\nb\n");
    assert_eq!(fmt("a 1 // at eof"), "a 1 // at eof\n");
}

#[test]
fn end_of_line_comment_after_children_block() {
    // kdl's parser records nothing after `}`; the text comes from the span.
    assert_eq!(fmt("a { b } // note\nc\n"), "a {\n    b\n} // note\nc\n");
    assert_eq!(fmt("a { b } /* one */ // two\n"), "a {\n    b\n} /* one */ // two\n");
}

#[test]
fn comment_after_semicolon_stays_on_its_line() {
    assert_eq!(fmt("a 1; // note\nb\n"), "a 1 // note\nb\n");
    assert_eq!(fmt("x {\n  a; b; // note\n}\n"), "x {\n    a\n    b // note\n}\n");
}

#[test]
fn inline_comments_between_entries() {
    assert_eq!(fmt("a   1 /* one */ 2 /* two */   k=3 /* three */\n"), "a 1 /* one */ 2 /* two */ k=3 /* three */\n");
    assert_eq!(fmt("a /* first */ \"x\"\n"), "a /* first */ \"x\"\n");
}

#[test]
fn comments_around_equals_and_type_annotations() {
    assert_eq!(fmt("a k /* x */ = /* y */ 1\n"), "a k /* x */ = /* y */ 1\n");
    assert_eq!(fmt("( /* t */ ty)a (/* u */ \"ty\")1\n"), "(/* t */ ty)a (/* u */ ty)1\n");
}

#[test]
fn comments_inside_children_block() {
    let src = "a { // after brace\n  /* before b */ b\n    // own line\n  c 1 /* mid */ 2\n}\n";
    let want = "a { // after brace\n    /* before b */\n    b\n    // own line\n    c 1 /* mid */ 2\n}\n";
    assert_eq!(fmt(src), want);
    assert_eq!(fmt("a { // only\n}\n"), "a { // only\n}\n");
}

#[test]
fn comment_at_end_of_block() {
    let src = "a {\n  b\n      // last\n  /* very last */\n}\n// end of file\n";
    let want = "a {\n    b\n    // last\n    /* very last */\n}\n// end of file\n";
    assert_eq!(fmt(src), want);
}

#[test]
fn slashdash_nodes_entries_and_children() {
    assert_eq!(fmt("a {\n  /- b 1\n  c\n  /- d\n}\n"), "a {\n    /- b 1\n    c\n    /- d\n}\n");
    assert_eq!(fmt("a /-1 2 /-k=3\n"), "a /-1 2 /-k=3\n");
    assert_eq!(fmt("a /-{ x } { y }\n"), "a /-{ x } {\n    y\n}\n");
    assert_eq!(fmt("a { y } /-{ x }\n"), "a {\n    y\n} /-{ x }\n");
}

#[test]
fn multi_line_comments_keep_their_shape() {
    let src = "a {\n        /* one\n         * two */\n        /- b \"\"\"\n          text\n          \"\"\"\n  c\n}\n";
    let want = "a {\n    /* one\n     * two */\n    /- b \"\"\"\n      text\n      \"\"\"\n    c\n}\n";
    assert_eq!(fmt(src), want);
}

#[test]
fn slashdashed_strings_keep_their_shape() {
    // Re-indenting must keep each multi-line string's common prefix and
    // must not mistake quotes, `{` or `/*` inside strings for syntax.
    let src = r##"a {
        /- b """
              say "hi" and ""
           /* not a comment
           """
        /- c #"""
              raw \ "" no
            """#
        /- d "esc \" { " {
                e
            }
    f
}
"##;
    let want = r##"a {
    /- b """
          say "hi" and ""
       /* not a comment
       """
    /- c #"""
          raw \ "" no
        """#
    /- d "esc \" { " {
            e
        }
    f
}
"##;
    assert_eq!(fmt(src), want);
}

#[test]
fn line_continuation_comments_are_kept() {
    assert_eq!(fmt("a 1 \\ // why\n      2\n"), "a 1 \\ // why\n    2\n");
    assert_eq!(fmt("a 1 \\\n  2\n"), "a 1 2\n");
    assert_eq!(fmt("a { b } \\ // why\n"), "a {\n    b\n} \\ // why\n");
    // The blank line ends the slashdashed `node1`; dropping it would
    // make `node2` an argument of that commented-out node.
    let src = "/-\\\nnode1 \\ // why\n\nnode2\n";
    assert_eq!(fmt(src), src);
    assert_eq!(data(&fmt(src)), data(src));
}

#[test]
fn empty_and_comment_only_documents() {
    assert_eq!(fmt(""), "");
    assert_eq!(fmt(" \n\n"), "");
    assert_eq!(fmt("\n// just this\n\n"), "// just this\n");
    assert_eq!(fmt("a {}\nb {\n}\n"), "a {}\nb {}\n");
}

#[test]
fn strings_kdl_would_print_raw_are_escaped() {
    let src = "\"n\\u{2028}\" \"\\u{7f}\" k=\"\\u{85}\\n\"\n";
    let out = fmt(src);
    assert_eq!(out, "\"n\\u{2028}\" \"\\u{7f}\" k=\"\\u{85}\\n\"\n");
    assert_eq!(data(&out), data(src));
}

#[test]
fn every_kdl_line_break_ends_a_comment() {
    // Found by the fuzz target (fuzz/corpus/pipeline/fmt-form-feed.kdl): the comment swallowed `}`.
    for br in ["\r\n", "\r", "\u{b}", "\u{c}", "\u{85}", "\u{2028}", "\u{2029}"] {
        let src = format!("\"\"{{t//{br}}}");
        assert_eq!(fmt(&src), "\"\" {\n    t //\n}\n", "{br:?}");
        let src = format!("a {{{br}  b // c{br}  d \"\"\"{br}  x{br}  \"\"\"{br}}}{br}");
        let out = fmt(&src);
        assert_eq!(fmt(&out), out, "{br:?}");
        assert_eq!(data(&out), data(&src), "{br:?}");
    }
}

#[test]
fn unparsable_input_is_an_error() {
    assert!(format_source("a {").is_err());
    assert!(format_source("a \"unterminated").is_err());
    assert!(format_source("a /* open").is_err());
}

// Random documents: node and entry soup with comments in every position
// the formatter handles. Each comment carries a unique tag `t<n>_`.
const NAMES: [&str; 6] = ["node", "ssh", "probe", "gpus", "labels", "session"];
const KEYS: [&str; 4] = ["user", "address", "readonly", "n"];
const STRINGS: [&str; 6] = ["bai", "10.0.0.11", "two words", "", "a\"q", "h100"];

#[derive(Debug, Clone)]
enum Value {
    Str(usize),
    Int(i64),
    Bool(bool),
}

#[derive(Debug, Clone)]
struct Entry {
    key: Option<usize>,
    value: Value,
    /// 0: plain, 1: `/* */` before, 2: slashdashed entry before,
    /// 3: `\ // comment` continuation before.
    deco: u8,
}

#[derive(Debug, Clone)]
struct Node {
    name: usize,
    entries: Vec<Entry>,
    /// 0: nothing, 1: `// comment`, 2: multi-line `/* */`, 3: `/- node`,
    /// 4: a slashdashed node with a multi-line string.
    above: u8,
    /// 0: newline, 1: `// comment`, 2: `/* comment */`, 3: `; // comment`,
    /// 4: `\ // comment` continuation ended by a blank line.
    end: u8,
    indent: usize,
    /// Children with flags: `/* */` and `/-{ }` before `{`, a comment
    /// after `{`, one before `}`.
    children: Option<(Vec<Node>, [bool; 4])>,
}

struct Writer {
    out: String,
    tags: Vec<String>,
}

impl Writer {
    fn tag(&mut self) -> String {
        let tag = format!("t{}_", self.tags.len());
        self.tags.push(tag.clone());
        tag
    }

    fn node(&mut self, node: &Node, depth: usize) {
        let pad = " ".repeat(depth * 2 + node.indent);
        let above = match node.above {
            1 => format!("{pad}// {}\n", self.tag()),
            2 => format!("{pad}/* {}\n{pad}   more */\n", self.tag()),
            3 => format!("{pad}/- node \"{}\" 1\n", self.tag()),
            4 => format!("{pad}/- x \"\"\"\n{pad}  {}\n{pad}  \"\"\"\n", self.tag()),
            _ => String::new(),
        };
        self.out += &above;
        self.out += &format!("{pad}{}", NAMES[node.name]);
        for entry in &node.entries {
            let deco = match entry.deco {
                1 => format!(" /* {} */ ", self.tag()),
                2 => format!("  /-\"{}\" ", self.tag()),
                3 => format!(" \\ // {}\n{pad}      ", self.tag()),
                _ => " ".to_owned(),
            };
            self.out += &deco;
            if let Some(key) = entry.key {
                self.out += &format!("{}=", KEYS[key]);
            }
            self.out += &match entry.value {
                Value::Str(i) => format!("{:?}", STRINGS[i]),
                Value::Int(n) => n.to_string(),
                Value::Bool(b) => format!("#{b}"),
            };
        }
        if let Some((children, [before, slashdash, after, closing])) = &node.children {
            if *before {
                let tag = self.tag();
                self.out += &format!(" /* {tag} */");
            }
            if *slashdash {
                let tag = self.tag();
                self.out += &format!(" /-{{ {tag} }}");
            }
            self.out += " {";
            if *after {
                let tag = self.tag();
                self.out += &format!(" // {tag}");
            }
            self.out += "\n";
            for child in children {
                self.node(child, depth + 1);
            }
            if *closing {
                let tag = self.tag();
                self.out += &format!("{pad}  // {tag}\n");
            }
            self.out += &format!("{pad}}}");
        }
        let end = match node.end {
            1 => format!("   // {}\n", self.tag()),
            2 => format!(" /* {} */\n", self.tag()),
            3 => format!("; // {}\n", self.tag()),
            4 => format!(" \\ // {}\n\n", self.tag()),
            _ => "\n".to_owned(),
        };
        self.out += &end;
    }
}

fn entry() -> impl Strategy<Value = Entry> {
    let value = prop_oneof![
        (0..STRINGS.len()).prop_map(Value::Str),
        (-1000i64..1000).prop_map(Value::Int),
        any::<bool>().prop_map(Value::Bool),
    ];
    (proptest::option::of(0..KEYS.len()), value, 0..4u8).prop_map(|(key, value, deco)| Entry { key, value, deco })
}

fn leaf() -> impl Strategy<Value = Node> {
    (0..NAMES.len(), prop::collection::vec(entry(), 0..4), 0..5u8, 0..5u8, 0..3usize)
        .prop_map(|(name, entries, above, end, indent)| Node { name, entries, above, end, indent, children: None })
}

fn node() -> impl Strategy<Value = Node> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        (leaf(), prop::collection::vec(inner, 0..4), any::<[bool; 4]>()).prop_map(|(mut node, children, flags)| {
            node.children = Some((children, flags));
            node
        })
    })
}

proptest! {
    #[test]
    fn random_documents_keep_comments_and_data(
        nodes in prop::collection::vec(node(), 0..5),
        closing in any::<bool>(),
    ) {
        let mut w = Writer { out: String::new(), tags: Vec::new() };
        for node in &nodes {
            w.node(node, 0);
        }
        if closing {
            let tag = w.tag();
            w.out += &format!("  // {tag}");
        }
        let out = format_source(&w.out).expect("generated KDL is valid");
        prop_assert_eq!(&fmt(&out), &out, "not idempotent for:\n{}", w.out);
        prop_assert_eq!(data(&out), data(&w.out));
        prop_assert!(out.is_empty() || (out.ends_with('\n') && !out.ends_with("\n\n")));
        for line in out.lines() {
            prop_assert_eq!(line, line.trim_end(), "trailing whitespace in:\n{}", out);
        }
        for tag in &w.tags {
            prop_assert_eq!(out.matches(tag.as_str()).count(), 1, "{} lost in:\n{}", tag, out);
        }
    }
}
