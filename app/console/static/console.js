// The console's entry point: draws the page the server named (body[data-page]).
import { ADMIN_PAGES } from "./admin.js";
import { page, problemText, say } from "./lib.js";
import { TENANT_PAGES } from "./tenant.js";

const draw = (page.role === "admin" ? ADMIN_PAGES : TENANT_PAGES)[page.page];
if (draw) {
  draw().then(
    () => document.body.setAttribute("data-ready", "true"),
    (error) => {
      say(problemText(error), "error");
      document.body.setAttribute("data-ready", "error");
    },
  );
} else {
  document.body.setAttribute("data-ready", "true");
}
