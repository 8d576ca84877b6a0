//! deploy/examples/php-chat under real Apache + mod_php behind tether, each
//! with the example's own files (apache.conf and tether.toml, addresses and
//! paths moved to the test's): two members chat in a room, one drops its
//! connection while the other keeps talking, resumes and gets every line
//! once and in order, then leaves with /quit and the other hears it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tether_tests::raw_http::get;
use tether_tests::session::{open_with, resume_with, Opened, WAIT};
use tether_tests::{free_port, set_mode, Apache, Tether};

const HOST: &str = "chat.example.test";

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples/php-chat")
        .join(name)
}

fn substitute(what: &str, text: &str, pairs: &[(&str, String)]) -> String {
    let mut out = text.to_owned();
    for (from, to) in pairs {
        assert!(out.contains(from), "{what} no longer holds {from:?}");
        out = out.replace(from, to);
    }
    out
}

/// Copies the example's www/ (and the browser library the page imports)
/// into `to`, readable by Apache's user, as docs/tutorial.md does.
fn install(to: &Path) {
    std::fs::create_dir_all(to.join("lib")).unwrap();
    for name in ["chat.pphp", "index.html", "lib/chat.php"] {
        std::fs::copy(example(&format!("www/{name}")), to.join(name)).unwrap();
        set_mode(&to.join(name), 0o644);
    }
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/js/httpsocket.js"),
        to.join("httpsocket.js"),
    )
    .unwrap();
    set_mode(&to.join("httpsocket.js"), 0o644);
    set_mode(&to.join("lib"), 0o755);
    set_mode(to, 0o755);
}

struct Chat {
    _apache: Apache,
    tether: Tether,
}

fn start() -> Chat {
    let apache_port = free_port();
    let admin_port = free_port();
    let listen_port = free_port();
    let apache_conf = substitute(
        "php-chat/apache.conf",
        &std::fs::read_to_string(example("apache.conf")).unwrap(),
        &[
            ("127.0.0.1:8082", format!("127.0.0.1:{apache_port}")),
            ("/var/www/php-chat", "{dir}/php-chat".to_owned()),
            ("127.0.0.1:9900", format!("127.0.0.1:{admin_port}")),
        ],
    );
    // mod_env, which Debian enables by default (SetEnv); the room files go
    // to the test's directory, not /tmp.
    let apache = Apache::start(&format!(
        "LoadModule env_module /usr/lib/apache2/modules/mod_env.so\n\
         SetEnv PHP_CHAT_STATE {{dir}}/state\n{apache_conf}"
    ));
    install(&apache.dir().join("php-chat"));
    let state = apache.dir().join("state");
    std::fs::create_dir_all(&state).unwrap();
    set_mode(&state, 0o777);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], apache_port));
    tether_tests::wait_until_accepts(addr, WAIT, || Ok(())).expect("the example's Listen");

    let tether = Tether::start(&substitute(
        "php-chat/tether.toml",
        &std::fs::read_to_string(example("tether.toml")).unwrap(),
        &[
            ("0.0.0.0:80", format!("127.0.0.1:{listen_port}")),
            ("127.0.0.1:9900", format!("127.0.0.1:{admin_port}")),
            ("127.0.0.1:8082", format!("127.0.0.1:{apache_port}")),
        ],
    ));
    Chat {
        _apache: apache,
        tether,
    }
}

fn join(chat: &Chat, room: &str, nick: &str) -> Opened {
    open_with(
        chat.tether.addr(),
        HOST,
        &format!("/chat.pphp?room={room}&nick={nick}"),
        &[],
    )
    .unwrap_or_else(|r| panic!("{nick} not joined: {}{}", r.head_text(), r.body_text()))
}

/// A member: its session and every line it received, in order.
struct Member {
    o: Opened,
    target: String,
    seen: Vec<String>,
}

impl Member {
    fn new(chat: &Chat, room: &str, nick: &str) -> Member {
        let o = join(chat, room, nick);
        let target = format!("/chat.pphp?room={room}&nick={nick}");
        Member {
            o,
            target,
            seen: Vec::new(),
        }
    }

    fn say(&mut self, line: &str) {
        self.o.chan.send(format!("{line}\n").as_bytes());
    }

    /// The next line, recorded.
    fn hear(&mut self) -> String {
        let line = self.o.chan.line();
        self.seen.push(line.clone());
        line
    }
}

#[test]
fn two_members_chat_and_one_resumes_without_losing_a_line() {
    let chat = start();
    let addr = chat.tether.addr();
    // The page and its library are served through tether.
    let page = get(addr, HOST, "/index.html");
    assert_eq!(page.status, 200);
    assert!(page
        .body_text()
        .contains("import { HTTPSocket } from '/httpsocket.js'"));
    assert_eq!(get(addr, HOST, "/httpsocket.js").status, 200);
    assert_eq!(
        get(addr, HOST, "/lib/chat.php").status,
        403,
        "the library is not a page"
    );

    let mut alice = Member::new(&chat, "lobby", "alice");
    assert_eq!(
        String::from_utf8_lossy(&alice.o.initial),
        "welcome to #lobby, alice; here: alice\n"
    );
    let mut bob = Member::new(&chat, "lobby", "bob");
    assert_eq!(
        String::from_utf8_lossy(&bob.o.initial),
        "welcome to #lobby, bob; here: alice, bob\n"
    );
    assert_eq!(alice.hear(), "* bob joined #lobby\n");

    alice.say("hi bob");
    assert_eq!(alice.hear(), "alice: hi bob\n");
    assert_eq!(bob.hear(), "alice: hi bob\n");
    bob.say("hi alice");
    assert_eq!(bob.hear(), "bob: hi alice\n");
    assert_eq!(alice.hear(), "bob: hi alice\n");

    // Bob's connection drops (reset, nothing said); Alice talks meanwhile.
    let sid = bob.o.sid.clone();
    let Member { o, target, seen } = bob;
    o.chan.reset();
    let said: Vec<String> = (1..=5).map(|i| format!("are you there? {i}")).collect();
    for line in &said {
        alice.say(line);
        assert_eq!(alice.hear(), format!("alice: {line}\n"));
    }
    // Bob comes back with his count: the lines he missed come first, once.
    let received = seen.len().to_string();
    let o = resume_with(addr, HOST, &target, &sid, Some(&received))
        .unwrap_or_else(|r| panic!("resume: {}{}", r.head_text(), r.body_text()));
    let mut bob = Member { o, target, seen };
    for line in &said {
        assert_eq!(bob.hear(), format!("alice: {line}\n"));
    }
    bob.say("back, missed nothing");
    assert_eq!(bob.hear(), "bob: back, missed nothing\n");
    assert_eq!(alice.hear(), "bob: back, missed nothing\n");

    bob.say("/who");
    assert_eq!(bob.hear(), "here: alice, bob\n");
    bob.say("/quit");
    assert_eq!(bob.hear(), "bye, bob\n");
    bob.o
        .chan
        .expect_closed(WAIT)
        .expect("the session ends after /quit");
    assert_eq!(alice.hear(), "* bob left #lobby\n");

    // Everything bob saw, in order, each once.
    let mut expected = vec!["alice: hi bob\n".to_owned(), "bob: hi alice\n".to_owned()];
    expected.extend(said.iter().map(|l| format!("alice: {l}\n")));
    expected.extend(
        [
            "bob: back, missed nothing\n",
            "here: alice, bob\n",
            "bye, bob\n",
        ]
        .map(str::to_owned),
    );
    assert_eq!(bob.seen, expected);
    // Nothing more is waiting for alice.
    alice.o.chan.set_read_timeout(Duration::from_millis(300));
    assert!(
        alice.o.chan.try_line().is_err(),
        "alice got an unexpected line"
    );
}

#[test]
fn a_bad_nick_is_refused_before_any_session_opens() {
    let chat = start();
    let r = open_with(
        chat.tether.addr(),
        HOST,
        "/chat.pphp?room=lobby&nick=Bad%20Nick",
        &[],
    )
    .err()
    .expect("no session");
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body_text(),
        "room and nick: 1 to 32 of a-z, 0-9, _ and -\n"
    );
}

#[test]
fn the_tutorial_shows_the_example_configuration() {
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/tutorial.md"),
    )
    .unwrap();
    let at = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let block = &doc[at..at + doc[at..].find("```").unwrap()];
    let settings = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.split('#').next().unwrap().trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect()
    };
    let file = std::fs::read_to_string(example("tether.toml")).unwrap();
    assert_eq!(settings(block), settings(&file));
}
