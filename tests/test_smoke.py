import links


class Chat(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4, max_frame_size=1 << 20)
    messenger = links.JsonMessenger()


def test_round_trip_through_spawned_service(poll, timer):
    store = links.StoreCallback()
    with links.Svc.bind("127.0.0.1:0", protocol=Chat, callback=store, max_connections=2, poll_handler=poll, timer=timer) as svc:
        sender = svc.into_sender_with_spawned_recver()
        with links.Clt.connect(f"127.0.0.1:{svc.local_addr[1]}", protocol=Chat, timer=timer, poll_handler=poll) as clt:
            assert clt.send({"n": 1}) is links.SendStatus.COMPLETED
            assert store.find_recv(lambda m: m == {"n": 1}, timeout=5.0) == {"n": 1}
            assert sender.send({"n": 2}, timeout=5.0) is links.SendStatus.COMPLETED
            assert clt.recv(timeout=5.0) == {"n": 2}
