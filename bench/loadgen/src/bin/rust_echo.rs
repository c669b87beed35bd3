//! The pure Rust reference: a TCP echo server with one thread per
//! connection and a UDP echo server on one thread, std only.
//!
//! `rust-echo tcp` or `rust-echo udp` binds 127.0.0.1 on a free port, prints
//! `PORT <n>` and serves until its standard input closes (or it is killed).
//! TCP connections are echoed chunk by chunk as they are read, which serves
//! line echo, connection-per-request and bulk transfer alike.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::thread;

fn serve_connection(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

fn serve_tcp() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    announce(listener.local_addr()?.port());
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                thread::spawn(move || serve_connection(stream));
            }
            Err(err) => eprintln!("rust-echo: accept: {err}"),
        }
    }
    Ok(())
}

fn serve_udp() -> std::io::Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    announce(socket.local_addr()?.port());
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = socket.recv_from(&mut buf)?;
        socket.send_to(&buf[..n], peer)?;
    }
}

fn announce(port: u16) {
    println!("PORT {port}");
    let _ = std::io::stdout().flush();
    // Stop when whoever started us closes our standard input.
    thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let result = match mode.as_str() {
        "tcp" => serve_tcp(),
        "udp" => serve_udp(),
        _ => {
            eprintln!("usage: rust-echo tcp|udp");
            std::process::exit(2);
        }
    };
    if let Err(err) = result {
        eprintln!("rust-echo: {err}");
        std::process::exit(1);
    }
}
