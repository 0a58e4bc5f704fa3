-- wrk script of the small-upload benchmarks (small-uploads.sh, cluster.sh): every request gets its own 8 KiB body
-- of the kind named by BENCH_BODY (image, random, text), whose first bytes after any header are BENCH_TAG (optional,
-- e.g. a node's name), the thread and the request number; BENCH_PATH's {n} becomes the same; BENCH_METHOD (POST).
local counter = 0
thread_id = 0
local threads = {}
local header = ""
local filler
local prefix = os.getenv("BENCH_TAG") or ""

function setup(thread)
    thread:set("thread_id", #threads + 1)
    table.insert(threads, thread)
end

function init(args)
    math.randomseed(thread_id * 7919)
    local kind = os.getenv("BENCH_BODY")
    local parts = {}
    if kind == "text" then
        local alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \n"
        for i = 1, 8192 do
            local k = math.random(1, #alphabet)
            parts[i] = alphabet:sub(k, k)
        end
    else
        for i = 1, 8192 do
            parts[i] = string.char(math.random(0, 255))
        end
        if kind == "image" then
            header = "\255\216\255\224\0\16JFIF\0\1\1\0\0\1\0\1\0\0"
        end
    end
    filler = table.concat(parts)
end

request = function()
    counter = counter + 1
    local tag = string.format("upload %s%d-%d ", prefix, thread_id, counter)
    local body = header .. tag .. filler:sub(#header + #tag + 1)
    local path = string.gsub(os.getenv("BENCH_PATH"), "{n}", prefix .. thread_id .. "-" .. counter)
    return wrk.format(os.getenv("BENCH_METHOD") or "POST", path, nil, body)
end

done = function(summary, latency, requests)
    io.write(string.format("RESULT %d %d %d %.1f %.1f\n", summary.requests, summary.errors.status,
        summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
        latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
