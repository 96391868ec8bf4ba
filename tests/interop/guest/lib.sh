# Helpers for rig scripts (sourced before the script; busybox sh).

# result NAME VALUE...: report a value to the host (VMResult.results[NAME] == "VALUE...").
result() {
    _n=$1
    shift
    echo "PYSLIRP-RESULT $_n $*"
}

# wait_ppp [TIMEOUT_S]: wait until pppd has run ip-up (IPCP up). Returns 1 on timeout.
# Afterwards $PPP_LOCAL / $PPP_REMOTE / $PPP_IFACE hold the addresses and interface.
wait_ppp() {
    _t=$(( ${1:-30} * 10 ))
    while [ $_t -gt 0 ]; do
        if [ -f /run/pyslirp/ppp-up ]; then
            . /run/pyslirp/ppp-up
            return 0
        fi
        sleep 0.1
        _t=$((_t - 1))
    done
    return 1
}

# wait_ppp_down [TIMEOUT_S]: wait until pppd has run ip-down.
wait_ppp_down() {
    _t=$(( ${1:-30} * 10 ))
    while [ $_t -gt 0 ]; do
        [ -f /run/pyslirp/ppp-down ] && return 0
        sleep 0.1
        _t=$((_t - 1))
    done
    return 1
}
