package veil.sdktest;

import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;

import org.json.JSONArray;
import org.json.JSONObject;

import com.mixpanel.mixpanelapi.ClientDelivery;
import com.mixpanel.mixpanelapi.DeliveryOptions;
import com.mixpanel.mixpanelapi.MessageBuilder;
import com.mixpanel.mixpanelapi.MixpanelAPI;
import com.mixpanel.mixpanelapi.featureflags.util.VersionUtil;

/**
 * Drives the official Mixpanel Java library against a Veil collector.
 *
 * <p>The Go test TestJavaSDK starts Veil, runs this class and then checks
 * ClickHouse. The library's version and every call's outcome are printed as
 * one JSON line each:
 * <pre>
 *   {"kind":"version","version":"1.6.1"}
 *   {"kind":"result","op":"deliver people updates","error":null}
 * </pre>
 * The Go test sees the requests themselves on its side. The class itself
 * never judges: the Go test does.
 *
 * <p>Environment: VEIL_BASE (http://host:port of the collector), VEIL_TOKEN
 * (the project token; this version of the library authenticates /import
 * with it), VEIL_NOW_MS (the test's clock, so that expected times are
 * exact).
 */
public final class Run {
    private static final long DAY_MS = 24L * 3600 * 1000;

    private Run() {}

    private interface Call {
        void run() throws Exception;
    }

    private static void emit(JSONObject line) {
        System.out.println(line.toString());
        System.out.flush();
    }

    /** Runs one library call; its exception, if any, is its outcome. */
    private static void call(String op, Call fn) {
        Object err = JSONObject.NULL;
        try {
            fn.run();
        } catch (Exception e) {
            err = e.getClass().getSimpleName() + ": " + e.getMessage();
        }
        emit(new JSONObject().put("kind", "result").put("op", op).put("error", err));
    }

    private static JSONObject props(Object... kv) {
        JSONObject o = new JSONObject();
        for (int i = 0; i < kv.length; i += 2) {
            o.put((String) kv[i], kv[i + 1]);
        }
        return o;
    }

    public static void main(String[] args) {
        String base = System.getenv("VEIL_BASE");
        String token = System.getenv("VEIL_TOKEN");
        String nowEnv = System.getenv("VEIL_NOW_MS");
        if (base == null || token == null || nowEnv == null) {
            System.err.println("Run: VEIL_BASE, VEIL_TOKEN and VEIL_NOW_MS are required");
            System.exit(2);
        }
        long now = Long.parseLong(nowEnv);
        emit(new JSONObject().put("kind", "version").put("version", VersionUtil.getVersion()));

        // The library's constructor for custom endpoints: its api_host.
        MixpanelAPI api = new MixpanelAPI(base + "/track", base + "/engage", base + "/groups", base + "/import");
        MessageBuilder mb = new MessageBuilder(token);

        // Events. The library gives each event a time in milliseconds, and
        // no $insert_id unless the caller does.
        call("sendMessage event", () -> api.sendMessage(
                mb.event("java-user-1", "java single", props("plan", "pro", "label", "party 🎉"))));
        call("sendMessage event with time and $insert_id", () -> api.sendMessage(
                mb.event("java-user-1", "java timed", props("time", now - 60_000, "$insert_id", "java-timed-1"))));
        call("deliver 60 events", () -> {
            // Sent as two requests, of 50 and 10.
            ClientDelivery d = new ClientDelivery();
            for (int i = 0; i < 60; i++) {
                d.addMessage(mb.event("java-user-" + (i % 3 + 1), "java batch",
                        props("time", now - i * 1000L, "$insert_id", "java-batch-" + i, "i", i)));
            }
            api.deliver(d);
        });
        call("deliver identical events", () -> {
            // Three clicks of one button in the same millisecond, without
            // $insert_id, as the library makes them in a loop: three events.
            ClientDelivery d = new ClientDelivery();
            for (int i = 0; i < 3; i++) {
                d.addMessage(mb.event("java-user-1", "java repeated", props("button", "buy", "time", now - 5_000)));
            }
            api.deliver(d);
        });

        // Imports: strict by default, or not.
        call("deliver imports, strict", () -> {
            ClientDelivery d = new ClientDelivery();
            for (int i = 0; i < 5; i++) {
                d.addMessage(mb.importEvent("java-user-2", "java import",
                        props("time", now - 10 * DAY_MS + i * 1000L, "$insert_id", "java-import-" + i)));
            }
            api.deliver(d);
        });
        call("deliver imports, not strict", () -> {
            ClientDelivery d = new ClientDelivery();
            for (int i = 0; i < 3; i++) {
                d.addMessage(mb.importEvent("java-user-3", "java import lenient",
                        props("time", now - 20 * DAY_MS + i * 1000L, "$insert_id", "java-lenient-" + i)));
            }
            api.deliver(d, new DeliveryOptions.Builder().importStrictMode(false).build());
        });
        call("deliver imports with an invalid record, strict", () -> {
            // Record 1 has no distinct_id: refused with a 400, which the
            // library reports; records 0 and 2 are imported all the same.
            ClientDelivery d = new ClientDelivery();
            for (int i = 0; i < 3; i++) {
                d.addMessage(mb.importEvent(i == 1 ? null : "java-user-2", "java import partial",
                        props("time", now - 2 * DAY_MS + i * 1000L, "$insert_id", "java-partial-" + i)));
            }
            api.deliver(d);
        });
        call("import with an unknown token", () -> api.sendMessage(new MessageBuilder("not-the-token")
                .importEvent("java-user-5", "java unauthorised import", props("time", now - 2 * DAY_MS))));

        // People, in one request: java-user-1 ends as
        //   {plan: "pro", first_seen: "2024-01-01", logins: 3, pages: ["home", "pricing"],
        //    tags: ["b"], $transactions: [{$amount: 29.99, $time: "2024-03-01T10:00:00"}]}
        // java-user-3 as {plan: "solo"}; java-user-2 is deleted.
        call("deliver people updates", () -> {
            ClientDelivery d = new ClientDelivery();
            d.addMessage(mb.set("java-user-1", props("plan", "pro", "seats", 3, "tags", new JSONArray(Arrays.asList("a")))));
            d.addMessage(mb.setOnce("java-user-1", props("first_seen", "2024-01-01", "plan", "free")));
            Map<String, Long> logins = new HashMap<>();
            logins.put("logins", 2L);
            d.addMessage(mb.increment("java-user-1", logins));
            logins.put("logins", 1L);
            d.addMessage(mb.increment("java-user-1", logins));
            d.addMessage(mb.append("java-user-1", props("pages", "home")));
            d.addMessage(mb.append("java-user-1", props("pages", "pricing")));
            Map<String, JSONArray> tags = new HashMap<>();
            tags.put("tags", new JSONArray(Arrays.asList("b", "a")));
            d.addMessage(mb.union("java-user-1", tags));
            d.addMessage(mb.remove("java-user-1", props("tags", "a")));
            d.addMessage(mb.unset("java-user-1", Arrays.asList("seats")));
            d.addMessage(mb.trackCharge("java-user-1", 29.99, props("$time", "2024-03-01T10:00:00")));
            d.addMessage(mb.set("java-user-2", props("plan", "team")));
            d.addMessage(mb.delete("java-user-2"));
            d.addMessage(mb.set("java-user-3", props("plan", "solo")));
            api.deliver(d);
        });

        // Groups, in one request: company/java-acme ends as
        // {industry: "widgets", founded: 1999, products: ["anvil"]}; company/java-gone is deleted.
        call("deliver group updates", () -> {
            ClientDelivery d = new ClientDelivery();
            d.addMessage(mb.groupSet("company", "java-acme", props("industry", "widgets", "size", 10)));
            d.addMessage(mb.groupSetOnce("company", "java-acme", props("founded", 1999, "industry", "ignored")));
            Map<String, JSONArray> products = new HashMap<>();
            products.put("products", new JSONArray(Arrays.asList("anvil", "rocket")));
            d.addMessage(mb.groupUnion("company", "java-acme", products));
            d.addMessage(mb.groupRemove("company", "java-acme", props("products", "rocket")));
            d.addMessage(mb.groupUnset("company", "java-acme", Arrays.asList("size")));
            d.addMessage(mb.groupSet("company", "java-gone", props("industry", "none")));
            d.addMessage(mb.groupDelete("company", "java-gone"));
            api.deliver(d);
        });
        api.close();
    }
}
