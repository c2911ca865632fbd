// The app's words in English and Simplified Chinese. The language comes from the
// visitor's switch, else the browser's languages (its Accept-Language), else English.
(function () {
  'use strict';
  var P = (window.Palisade = window.Palisade || {});
  var STRINGS = {
    en: {
      brand: 'Palisade Assistant', skip: 'Skip to content', language: 'Language', status_link: 'Service status',
      privacy: 'Your conversations are kept only in this browser. The server stores no chat content.',
      nav_chat: 'Chat', nav_account: 'Account', nav_login: 'Log in', nav_signup: 'Sign up', nav_logout: 'Log out',
      working: 'Working…', loading: 'Loading…', save: 'Save', cancel: 'Cancel', revoke: 'Revoke', never: 'never',
      copy: 'Copy', copied: 'Copied', copy_failed: 'Could not copy', seconds: '{s} s',
      need_login: 'Please log in to continue.', signed_out: 'You are logged out.',
      home_t: 'An assistant that stays up', home_lead: 'Ask questions, draft text and explore ideas, with replies streamed as they are written.',
      home_signup: 'Create an account', home_login: 'Log in',
      home_p1: 'Sign up with a phone number or an e-mail address.',
      home_p2: 'Protect your account with an authenticator app.',
      home_p3: 'Your conversations stay in your browser.',
      signup_t: 'Create your account', f_signup_with: 'Sign up with', f_phone_short: 'Phone', f_email_short: 'E-mail',
      f_phone: 'Phone number (with country code)', f_email: 'E-mail address', f_password: 'Password',
      f_password_hint: 'At least 9 characters that are hard to guess; a few unrelated words work well.',
      f_invite_q: 'I have an invitation code', f_invite: 'Invitation code',
      signup_submit: 'Create account', signup_busy: 'Creating your account…', signup_have: 'Already have an account?',
      room_t: 'You are in the queue', room_lead: 'Many people are signing up right now, so we let them in a few at a time.',
      room_position: 'Your place in line:', room_eta: 'Time left:', room_eta_unknown: 'a moment', room_admitted: "it's your turn",
      room_keep: 'Keep this page open: it goes on by itself.',
      verify_t: 'Enter your code', verify_lead_sms: 'We sent a 6-digit code to your phone. It expires in {min} minutes.',
      verify_lead_email: 'We sent a 6-digit code to your e-mail address. It expires in {min} minutes.',
      f_code: 'Code', verify_submit: 'Verify', verify_resend: 'Send a new code', verify_resent: 'A new code is on its way.',
      verify_none_t: 'Nothing to verify', verify_none: 'Start by creating an account.',
      verified: 'Your account is verified. Log in to start chatting.',
      login_t: 'Log in', f_identifier: 'Phone number or e-mail address', login_submit: 'Log in', login_busy: 'Logging in…',
      login_new: 'New here?', f_totp: 'Code from your authenticator app', f_totp_hint: 'Six digits; a new one every 30 seconds.',
      f_recovery: 'Recovery code', f_recovery_hint: 'One of the codes you saved when you set up two-step sign-in.',
      login_use_recovery: 'Use a recovery code instead', login_use_totp: 'Use the authenticator app instead',
      login_need_code: 'This account uses two-step sign-in: enter the code to continue.',
      mfa_required_enrol: 'Your account must use two-step sign-in: set up an authenticator app below.',
      chat_t: 'Chat', chat_list: 'Conversations', chat_new: 'New chat', chat_clear: 'Clear all',
      chat_clear_confirm: 'Delete every conversation kept in this browser?', chat_none: 'No conversations yet.',
      chat_untitled: 'New conversation', chat_rename: 'Rename', chat_delete: 'Delete', chat_rename_x: 'Rename “{title}”',
      chat_delete_x: 'Delete “{title}”', chat_delete_confirm: 'Delete “{title}”?', chat_new_name: 'New name',
      chat_model: 'Model', chat_model_default: 'default', chat_messages: 'Messages', chat_message: 'Message',
      chat_placeholder: 'Ask anything…', chat_hint: 'Enter sends; Shift+Enter starts a new line.',
      chat_send: 'Send', chat_stop: 'Stop', chat_stopped: 'Stopped.', chat_regenerate: 'Regenerate',
      chat_empty: 'Start a conversation: type a message below.', you: 'You', assistant: 'Assistant',
      acct_t: 'Your account', acct_lead: 'Account number {id}.', logout_lead: 'End this session on this device.',
      sessions_t: 'Signed-in devices', sessions_lead: 'Revoke a device you do not recognise.',
      session_this: 'This device', session_other: 'Another device', session_since: 'since {when}',
      session_revoke_x: 'Revoke the session since {when}', session_revoked: 'The session is revoked.',
      totp_t: 'Two-step sign-in', totp_lead: 'Ask for a code from an authenticator app at each login.',
      f_password_confirm: 'Your password', f_totp_current: 'Code from your current authenticator app',
      totp_start: 'Set up an authenticator app', totp_need_current: 'Two-step sign-in is already on: enter a current code to replace it.',
      totp_step1: 'Scan this code with your authenticator app, or type the key below.',
      totp_step2: 'Enter the six digits the app shows.', totp_qr_label: 'QR code for your authenticator app',
      totp_qr_failed: 'The QR code could not be drawn; type the key instead.', totp_secret: 'Key:',
      f_totp_new: 'Code from the app', totp_confirm: 'Turn on', totp_on: 'Two-step sign-in is on.',
      codes_t: 'Your recovery codes', codes_lead: 'Each code works once if you lose your phone. Save them now: they will not be shown again.',
      codes_copy: 'Copy the codes', codes_done: 'I have saved them',
      keys_t: 'API keys', keys_lead: 'Keys let your programs use the API as you.', f_key_name: 'Name of the new key',
      keys_create: 'Create key', keys_created: 'Your new key', keys_once: 'Copy it now: it will not be shown again.',
      keys_none: 'No keys yet.', keys_used: 'created {created}, last used {used}', keys_revoked_at: 'revoked {when}',
      keys_revoke_x: 'Revoke the key “{name}”', keys_revoked: 'The key “{name}” is revoked.',
      pw_t: 'Change password', pw_lead: 'Your other devices will be logged out.', f_password_current: 'Current password',
      f_password_new: 'New password', pw_submit: 'Change password', pw_changed: 'Your password is changed; other devices are logged out.',
      wrong_password: 'The password is wrong.',
      pow_t: 'Checking your browser…', pow: 'The service is defending itself against automated traffic. Your browser is doing a little work (difficulty {d}) to show it is not a bot; this usually takes a few seconds.',
      pow_working: 'Working…', pow_tries: '{n} tries so far…', pow_ok_t: 'Your browser passed the check.',
      pow_ok: 'Thank you for waiting.', pow_failed_t: 'The check did not finish.', pow_failed: 'Please try again.',
      retry_in: 'You can try again in {s} s.', retry_now: 'You can try again now.',
      e_restricted_t: 'Sign-up is restricted right now', e_restricted: 'New registrations are limited at the moment.',
      e_rate_t: 'Too many requests', e_rate: 'Please slow down and try again in a moment.',
      e_busy_t: 'The service is very busy', e_busy: 'We are serving people who are already signed in first. Please try again shortly.',
      e_network_t: 'No connection', e_network: 'The server could not be reached. Check your connection and try again.',
      e_blocked_t: 'Access blocked', e_blocked: 'Requests from your network are blocked right now.',
      e_check_t: 'Browser check failed', e_check: 'Your browser could not complete the automated-traffic check. Please try again.',
      e_suspended_t: 'Account suspended', e_suspended: 'This account is suspended. Contact the operator if you think this is a mistake.',
      e_prompt_t: 'Message refused', e_prompt: 'This message was refused by the content guard.',
      e_filter_t: 'Reply cut off', e_filter: 'The content filter stopped this reply.',
      e_login_t: 'Could not log in', e_login: 'The phone number, e-mail address or password is wrong.',
      e_code_t: 'Wrong code', e_code: 'The code is wrong or has expired.',
      e_exists_t: 'Already registered', e_exists: 'An account with this phone number or e-mail address exists. Log in instead.',
      e_ticket_t: 'Your place in line expired', e_ticket: 'Please sign up again to rejoin the queue.',
      e_signedout_t: 'Signed out', e_signedout: 'Your session has ended. Please log in again.',
      e_missing_t: 'Not available', e_missing: 'This feature is not available on this server.',
      e_server_t: 'Something went wrong', e_server: 'The server could not complete this. Please try again.',
      e_generic_t: 'Please check',
    },
    zh: {
      brand: 'Palisade 助手', skip: '跳到正文', language: '语言', status_link: '服务状态',
      privacy: '你的对话只保存在此浏览器中，服务器不保存任何聊天内容。',
      nav_chat: '聊天', nav_account: '账户', nav_login: '登录', nav_signup: '注册', nav_logout: '退出登录',
      working: '处理中…', loading: '加载中…', save: '保存', cancel: '取消', revoke: '撤销', never: '从未',
      copy: '复制', copied: '已复制', copy_failed: '无法复制', seconds: '{s} 秒',
      need_login: '请先登录。', signed_out: '你已退出登录。',
      home_t: '始终在线的智能助手', home_lead: '提问、写作、探索想法，回复边生成边显示。',
      home_signup: '创建账户', home_login: '登录',
      home_p1: '可用手机号或电子邮箱注册。', home_p2: '用身份验证器应用保护你的账户。', home_p3: '你的对话只保存在你的浏览器中。',
      signup_t: '创建账户', f_signup_with: '注册方式', f_phone_short: '手机号', f_email_short: '电子邮箱',
      f_phone: '手机号（含国家代码）', f_email: '电子邮箱地址', f_password: '密码',
      f_password_hint: '至少 9 个难以猜到的字符；几个不相关的词组合起来效果很好。',
      f_invite_q: '我有邀请码', f_invite: '邀请码',
      signup_submit: '创建账户', signup_busy: '正在创建账户…', signup_have: '已有账户？',
      room_t: '你正在排队', room_lead: '现在注册的人很多，我们分批放行。',
      room_position: '你的排位：', room_eta: '预计等待：', room_eta_unknown: '片刻', room_admitted: '轮到你了',
      room_keep: '请保持此页面打开，轮到你时会自动继续。',
      verify_t: '输入验证码', verify_lead_sms: '我们已向你的手机发送 6 位验证码，{min} 分钟内有效。',
      verify_lead_email: '我们已向你的邮箱发送 6 位验证码，{min} 分钟内有效。',
      f_code: '验证码', verify_submit: '验证', verify_resend: '重新发送验证码', verify_resent: '新的验证码已发送。',
      verify_none_t: '没有待验证的账户', verify_none: '请先创建账户。',
      verified: '账户已验证，请登录开始聊天。',
      login_t: '登录', f_identifier: '手机号或电子邮箱', login_submit: '登录', login_busy: '正在登录…',
      login_new: '第一次来？', f_totp: '身份验证器应用中的验证码', f_totp_hint: '6 位数字，每 30 秒更新一次。',
      f_recovery: '恢复码', f_recovery_hint: '开启两步登录时保存的恢复码之一。',
      login_use_recovery: '改用恢复码', login_use_totp: '改用身份验证器应用',
      login_need_code: '此账户已开启两步登录：请输入验证码继续。',
      mfa_required_enrol: '你的账户必须开启两步登录：请在下方设置身份验证器应用。',
      chat_t: '聊天', chat_list: '对话', chat_new: '新对话', chat_clear: '全部清除',
      chat_clear_confirm: '删除此浏览器中保存的所有对话？', chat_none: '还没有对话。',
      chat_untitled: '新对话', chat_rename: '重命名', chat_delete: '删除', chat_rename_x: '重命名“{title}”',
      chat_delete_x: '删除“{title}”', chat_delete_confirm: '删除“{title}”？', chat_new_name: '新名称',
      chat_model: '模型', chat_model_default: '默认', chat_messages: '消息', chat_message: '消息',
      chat_placeholder: '请输入问题…', chat_hint: '按 Enter 发送，Shift+Enter 换行。',
      chat_send: '发送', chat_stop: '停止', chat_stopped: '已停止。', chat_regenerate: '重新生成',
      chat_empty: '开始对话：在下方输入消息。', you: '你', assistant: '助手',
      acct_t: '你的账户', acct_lead: '账户编号 {id}。', logout_lead: '在此设备上结束本次会话。',
      sessions_t: '已登录的设备', sessions_lead: '如有不认识的设备，请撤销。',
      session_this: '此设备', session_other: '其他设备', session_since: '自 {when} 起',
      session_revoke_x: '撤销自 {when} 起的会话', session_revoked: '会话已撤销。',
      totp_t: '两步登录', totp_lead: '每次登录时要求输入身份验证器应用中的验证码。',
      f_password_confirm: '你的密码', f_totp_current: '当前身份验证器应用中的验证码',
      totp_start: '设置身份验证器应用', totp_need_current: '两步登录已开启：请输入当前验证码以更换。',
      totp_step1: '用身份验证器应用扫描此二维码，或手动输入下方密钥。',
      totp_step2: '输入应用显示的 6 位数字。', totp_qr_label: '身份验证器应用的二维码',
      totp_qr_failed: '无法绘制二维码，请手动输入密钥。', totp_secret: '密钥：',
      f_totp_new: '应用中的验证码', totp_confirm: '开启', totp_on: '两步登录已开启。',
      codes_t: '你的恢复码', codes_lead: '手机丢失时，每个恢复码可使用一次。请立即保存：它们不会再次显示。',
      codes_copy: '复制恢复码', codes_done: '我已保存',
      keys_t: 'API 密钥', keys_lead: '你的程序可以用密钥以你的身份调用 API。', f_key_name: '新密钥的名称',
      keys_create: '创建密钥', keys_created: '你的新密钥', keys_once: '请立即复制：它不会再次显示。',
      keys_none: '还没有密钥。', keys_used: '创建于 {created}，最近使用 {used}', keys_revoked_at: '撤销于 {when}',
      keys_revoke_x: '撤销密钥“{name}”', keys_revoked: '密钥“{name}”已撤销。',
      pw_t: '修改密码', pw_lead: '你的其他设备将被退出登录。', f_password_current: '当前密码',
      f_password_new: '新密码', pw_submit: '修改密码', pw_changed: '密码已修改，其他设备已退出登录。',
      wrong_password: '密码错误。',
      pow_t: '正在检查你的浏览器…', pow: '服务正在抵御自动化流量。你的浏览器正在完成少量计算（难度 {d}），以证明你不是机器人，通常只需几秒。',
      pow_working: '计算中…', pow_tries: '已尝试 {n} 次…', pow_ok_t: '你的浏览器已通过检查。',
      pow_ok: '感谢等待。', pow_failed_t: '检查未完成。', pow_failed: '请重试。',
      retry_in: '{s} 秒后可重试。', retry_now: '现在可以重试。',
      e_restricted_t: '注册暂时受限', e_restricted: '目前新用户注册受到限制。',
      e_rate_t: '请求过于频繁', e_rate: '请放慢速度，稍后再试。',
      e_busy_t: '服务繁忙', e_busy: '我们正在优先服务已登录的用户，请稍后再试。',
      e_network_t: '无法连接', e_network: '无法连接到服务器，请检查网络后重试。',
      e_blocked_t: '访问被阻止', e_blocked: '来自你所在网络的请求暂时被阻止。',
      e_check_t: '浏览器检查失败', e_check: '你的浏览器未能完成自动化流量检查，请重试。',
      e_suspended_t: '账户已停用', e_suspended: '此账户已被停用。如认为有误，请联系运营方。',
      e_prompt_t: '消息被拒绝', e_prompt: '此消息被内容防护拒绝。',
      e_filter_t: '回复被截断', e_filter: '内容过滤器中止了这条回复。',
      e_login_t: '无法登录', e_login: '手机号、电子邮箱或密码错误。',
      e_code_t: '验证码错误', e_code: '验证码错误或已过期。',
      e_exists_t: '已注册', e_exists: '该手机号或电子邮箱已有账户，请直接登录。',
      e_ticket_t: '排队已过期', e_ticket: '请重新注册以再次排队。',
      e_signedout_t: '已退出登录', e_signedout: '你的会话已结束，请重新登录。',
      e_missing_t: '不可用', e_missing: '此服务器不提供该功能。',
      e_server_t: '出错了', e_server: '服务器无法完成此操作，请重试。',
      e_generic_t: '请检查',
    },
  };

  function pick() {
    var saved = null;
    try {
      saved = localStorage.getItem('palisade.lang');
    } catch (_) {}
    if (STRINGS[saved]) return saved;
    var langs = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || 'en'];
    for (var i = 0; i < langs.length; i++) {
      var l = String(langs[i]).toLowerCase();
      if (l.indexOf('zh') === 0) return 'zh';
      if (l.indexOf('en') === 0) return 'en';
    }
    return 'en';
  }

  P.setLang = function (lang) {
    P.lang = STRINGS[lang] ? lang : 'en';
    document.documentElement.lang = P.lang === 'zh' ? 'zh-CN' : 'en';
    try {
      localStorage.setItem('palisade.lang', P.lang);
    } catch (_) {}
  };

  // The text for `key`, with {name} replaced from `vars`.
  P.t = function (key, vars) {
    var s = STRINGS[P.lang][key] || STRINGS.en[key] || key;
    return vars ? s.replace(/\{(\w+)\}/g, function (m, k) { return vars[k] === undefined ? m : String(vars[k]); }) : s;
  };

  P.lang = pick();
  document.documentElement.lang = P.lang === 'zh' ? 'zh-CN' : 'en';
})();
