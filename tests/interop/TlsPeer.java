// A TLS peer on the JDK's own TLS stack (JSSE, not OpenSSL), for tests/test_tls_interop.py.
//
//   java TlsPeer.java server KEYSTORE.p12 PASSWORD     prints its port, echoes one client's frames
//   java TlsPeer.java client CA.pem PORT COUNT          sends COUNT frames, checks each echo, prints "ok"
//
// Frames are a 4-byte big-endian length, then that many bytes.
import java.io.*;
import java.net.InetAddress;
import java.nio.charset.StandardCharsets;
import java.security.KeyStore;
import java.security.cert.CertificateFactory;
import java.util.Arrays;
import javax.net.ssl.*;

public class TlsPeer {
    public static void main(String[] args) throws Exception {
        if (args[0].equals("server")) {
            serve(args[1], args[2].toCharArray());
        } else {
            dial(args[1], Integer.parseInt(args[2]), Integer.parseInt(args[3]));
        }
    }

    static void serve(String keystore, char[] password) throws Exception {
        KeyStore keys = KeyStore.getInstance("PKCS12");
        try (FileInputStream in = new FileInputStream(keystore)) {
            keys.load(in, password);
        }
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(keys, password);
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(kmf.getKeyManagers(), null, null);
        SSLServerSocketFactory factory = ctx.getServerSocketFactory();
        try (SSLServerSocket server = (SSLServerSocket) factory.createServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            System.out.println(server.getLocalPort());
            System.out.flush();
            try (SSLSocket peer = (SSLSocket) server.accept()) {
                DataInputStream in = new DataInputStream(new BufferedInputStream(peer.getInputStream()));
                DataOutputStream out = new DataOutputStream(new BufferedOutputStream(peer.getOutputStream()));
                while (true) {
                    int n;
                    try {
                        n = in.readInt();
                    } catch (EOFException end) {
                        return;
                    }
                    byte[] frame = new byte[n];
                    in.readFully(frame);
                    out.writeInt(n);
                    out.write(frame);
                    out.flush();
                }
            }
        }
    }

    static void dial(String caPem, int port, int count) throws Exception {
        KeyStore trust = KeyStore.getInstance(KeyStore.getDefaultType());
        trust.load(null, null);
        try (FileInputStream in = new FileInputStream(caPem)) {
            trust.setCertificateEntry("ca", CertificateFactory.getInstance("X.509").generateCertificate(in));
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trust);
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(null, tmf.getTrustManagers(), null);
        try (SSLSocket sock = (SSLSocket) ctx.getSocketFactory().createSocket("localhost", port)) {
            SSLParameters params = sock.getSSLParameters();
            params.setEndpointIdentificationAlgorithm("HTTPS");  // check the server's name too
            sock.setSSLParameters(params);
            DataOutputStream out = new DataOutputStream(new BufferedOutputStream(sock.getOutputStream()));
            DataInputStream in = new DataInputStream(new BufferedInputStream(sock.getInputStream()));
            for (int i = 0; i < count; i++) {
                byte[] frame = ("ping-" + i).getBytes(StandardCharsets.US_ASCII);
                out.writeInt(frame.length);
                out.write(frame);
                out.flush();
                byte[] back = new byte[in.readInt()];
                in.readFully(back);
                if (!Arrays.equals(frame, back)) {
                    System.out.println("mismatch at " + i);
                    System.exit(1);
                }
            }
            System.out.println("ok " + sock.getSession().getProtocol());
        }
    }
}
