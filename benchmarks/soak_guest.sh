# The guest side of benchmarks/soak.py (busybox sh; the rig's init sources tests/interop/guest/lib.sh
# first). pppd dials with persist, then four loops keep the link busy for $SOAK_SECONDS; every
# transfer reports one `result` line, which the host checks:
#   result echo     "OK BAD WHY"          one interactive session: answers that matched, that did
#                                         not, and why it ended (done, write, noanswer, mismatch)
#   result download "SIZE SEED ok SHA"    a download and the sha256 of what arrived, or
#                   "SIZE SEED failed RC" wget's exit status (143: no data for 30 s)
#   result upload   "SIZE SENT RECEIVED"  an upload: the sha256 sent, the one the sink computed
#                                         (none: the sink never answered)
#   result short    "OK FAILED BAD"       20 short connections: answered, cut short, answered wrongly
# then, once the line is quiet, `result final "SHA"` (a last download) and `result load_done 1`.
# Environment: PPPD_COMMAND, SOAK_SECONDS, ECHO_PORT, FILES_PORT, SINK_PORT, DOWN_SIZES, UP_SIZES.

eval "$PPPD_COMMAND" &
wait_ppp 60 || { result up 0; exit 1; }
result up 1

uptime_seconds() { cut -d. -f1 /proc/uptime; }
END=$(($(uptime_seconds) + SOAK_SECONDS))
running() { [ "$(uptime_seconds)" -lt "$END" ]; }

# One connection to the echo service, a line every 0.2 s, each answer checked; after 100 lines or a
# failure, a new connection.
echo_loop() {
    trap '' PIPE
    mkfifo /tmp/echo.in /tmp/echo.out
    session=0
    while running; do
        session=$((session + 1))
        timeout 900 nc 10.0.0.1 "$ECHO_PORT" < /tmp/echo.in > /tmp/echo.out 2>/dev/null &
        nc_pid=$!
        exec 3> /tmp/echo.in 4< /tmp/echo.out
        ok=0 bad=0 why=done n=0
        while running && [ $n -lt 100 ]; do
            n=$((n + 1))
            line="echo $session $n $RANDOM"
            echo "$line" >&3 2>/dev/null || { why=write; break; }
            read -t 15 answer <&4 || { why=noanswer; break; }
            if [ "$answer" = "$line" ]; then ok=$((ok + 1)); else bad=$((bad + 1)); why=mismatch; break; fi
            sleep 0.2
        done
        exec 3>&- 4<&-
        kill $nc_pid 2>/dev/null
        wait $nc_pid 2>/dev/null
        result echo "$ok $bad $why"
        [ $why = done ] || sleep 1
    done
}

# run_watched FILE SECONDS COMMAND...: run COMMAND, killing it if FILE stops growing for SECONDS (a
# download whose server side vanished in a line cut would wait for data forever).
run_watched() {
    local file=$1 stall=$2 pid last=-1 now still=0
    shift 2
    "$@" &
    pid=$!
    while kill -0 $pid 2>/dev/null; do
        sleep 1
        now=$(stat -c %s "$file" 2>/dev/null || echo 0)
        if [ "$now" = "$last" ]; then still=$((still + 1)); else still=0 last=$now; fi
        [ $still -lt "$stall" ] || kill $pid 2>/dev/null
    done
    wait $pid
}

download_loop() {
    seed=0
    while running; do
        for size in $DOWN_SIZES; do
            running || break
            seed=$((seed + 1))
            rm -f /tmp/down
            run_watched /tmp/down 30 wget -q -O /tmp/down "http://10.0.0.1:$FILES_PORT/blob/$size/$seed" 2>/dev/null
            status=$?
            if [ $status = 0 ]; then
                result download "$size $seed ok $(sha256sum /tmp/down | cut -d' ' -f1)"
            else
                result download "$size $seed failed $status"
                sleep 1
            fi
        done
    done
}

upload_loop() {
    while running; do
        for size in $UP_SIZES; do
            running || break
            head -c "$size" /dev/urandom > /tmp/up
            sent=$(sha256sum /tmp/up | cut -d' ' -f1)
            received=$({ echo "$size"; cat /tmp/up; } | timeout 180 nc 10.0.0.1 "$SINK_PORT" 2>/dev/null)
            result upload "$size $sent ${received:-none}"
            [ -n "$received" ] || sleep 1
        done
    done
}

# Connect, one line echoed, close (the client first), 5 a second at most.
short_loop() {
    n=0 ok=0 failed=0 bad=0
    while running; do
        n=$((n + 1))
        expected="short $n"
        answer=$(echo "$expected" | timeout 30 nc 10.0.0.1 "$ECHO_PORT" 2>/dev/null)
        if [ "$answer" = "$expected" ]; then
            ok=$((ok + 1))
        else
            case "$expected" in
                "$answer"*) failed=$((failed + 1)) ;;  # nothing, or cut short
                *) bad=$((bad + 1)) ;;
            esac
        fi
        if [ $((n % 20)) = 0 ]; then
            result short "$ok $failed $bad"
            ok=0 failed=0 bad=0
        fi
        sleep 0.2
    done
    result short "$ok $failed $bad"
}

echo_loop & ECHO_LOOP=$!
download_loop & DOWNLOAD_LOOP=$!
upload_loop & UPLOAD_LOOP=$!
short_loop & SHORT_LOOP=$!
wait $ECHO_LOOP $DOWNLOAD_LOOP $UPLOAD_LOOP $SHORT_LOOP

# The host injects no fault now: the link must carry a last download (it may still be redialling).
final=none
for attempt in $(seq 20); do
    if timeout 60 wget -q -O /tmp/final "http://10.0.0.1:$FILES_PORT/blob/65536/final" 2>/dev/null; then
        final=$(sha256sum /tmp/final | cut -d' ' -f1)
        break
    fi
    sleep 3
done
result final "$final"
result load_done 1
sleep 100000  # the host measures the quiet line, then stops the VM
