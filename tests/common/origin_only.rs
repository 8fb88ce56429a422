//! A raw-TCP HTTP/1.1 server on 127.0.0.1 that routes only origin-form request lines
//! (`POST /v1/completions HTTP/1.1`), as llama.cpp's server does: an absolute-form line
//! (`POST http://host/v1/completions HTTP/1.1`) gets 404. It records every request line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct OriginOnlyServer {
    pub addr: SocketAddr,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl OriginOnlyServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let seen = seen.clone();
                std::thread::spawn(move || serve(conn, &seen));
            }
        });
        OriginOnlyServer { addr, lines }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn serve(conn: TcpStream, seen: &Mutex<Vec<String>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = match conn.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let request_line = line.trim_end().to_string();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        seen.lock().unwrap().push(request_line.clone());
        let target = request_line.split(' ').nth(1).unwrap_or("");
        let (status, body) = match target {
            "/v1/models" => ("200 OK", r#"{"object":"list","data":[{"id":"origin-model","object":"model"}]}"#.to_string()),
            "/v1/completions" => (
                "200 OK",
                r#"{"choices":[{"text":" ok","index":0,"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#.to_string(),
            ),
            _ => ("404 Not Found", "File Not Found".to_string()),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
            body.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(body.as_bytes()).is_err() {
            return;
        }
    }
}
