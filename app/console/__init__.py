"""The console (``/console``): the gateway's web pages for tenants and the operator.

Pages are HTML shells served with a strict Content-Security-Policy; the browser-side module
(``static/``) fills them from the JSON API, called same-origin with the console's session
cookie (app.auth.dependencies accepts it beside the Bearer header, with its CSRF token on
every mutation). Sessions are rows of ``console_sessions`` (app.console.sessions).
"""
